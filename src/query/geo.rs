//! geoQ (clause 4.10). Placeholder: being written.
