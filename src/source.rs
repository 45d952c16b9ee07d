//! Sources: where the bytes of records come from. A source hands lines and
//! their positions to a format; it knows nothing of columns or events.
//!
//! [`file`] reads files, folders of files and stdin, compressed or not;
//! the Kafka source reads topics.

pub mod file;
pub mod kafka;
