//! One module per system under test.

pub mod durq_peer;
pub mod fjall_peer;
pub mod lmdb_peer;
pub mod naive;
pub mod okaywal_peer;
pub mod queue_file_peer;
pub mod redis;
pub mod sqlite;
pub mod yaque_peer;
