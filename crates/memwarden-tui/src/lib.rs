//! memwarden-tui.
