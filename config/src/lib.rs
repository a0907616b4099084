//! keel-config (being written)
