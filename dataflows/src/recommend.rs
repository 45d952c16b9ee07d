//! Per-user top-k recommendations. (to be written)
