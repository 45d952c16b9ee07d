//! Item co-occurrence and similarity. (to be written)
