//! The q language (clause 4.9). Placeholder: being written.
