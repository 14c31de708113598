//! George reference agent: runs a job's steps and reports to the engine
