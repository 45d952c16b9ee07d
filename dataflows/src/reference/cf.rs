//! Reference history, similarity and recommendations. (to be written)
