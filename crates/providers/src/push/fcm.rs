//! Placeholder: the fcm unit is written on its own branch.
