//! keel-netstack (being written)
