//! Pure analysis over snapshots and their history.
