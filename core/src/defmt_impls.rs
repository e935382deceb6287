//! `defmt::Format` implementations for the public types (feature `defmt`).
