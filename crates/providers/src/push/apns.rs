//! Placeholder: the apns unit is written on its own branch.
