//! Configuration advice: PGTune's recommendations for the machine and workload against the
//! current settings, and a pool size for the application.

pub mod load;
pub mod machine;
pub mod pgtune;
pub mod pool;
pub mod settings;
