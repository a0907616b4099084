//! keel image builder (being written)
