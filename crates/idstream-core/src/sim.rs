//! Placeholder: helper is writing the simulator generator.
