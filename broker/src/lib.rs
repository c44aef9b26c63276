//! Sigil broker library.
