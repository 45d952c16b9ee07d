//! Each user's most recent N distinct items. (to be written)
