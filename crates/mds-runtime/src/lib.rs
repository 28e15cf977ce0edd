//! Ephemeral compute: sandboxes and runtime instances, each a
//! jailed process tree over a workspace of its own. Data never lives here:
//! it lives in the data services the processes reach with the variables
//! they were booted with.

pub mod artifact;
pub mod egress;
pub mod instance;
pub mod jail;
pub mod netns;
pub mod sandbox;
pub mod volume;
