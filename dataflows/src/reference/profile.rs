//! Reference profiles. (to be written)
