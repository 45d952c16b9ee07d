//! Per-user profile features. (to be written)
