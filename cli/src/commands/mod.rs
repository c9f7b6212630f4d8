//! The subcommands, one module each: its `Args` (clap derive) and `run(args)`.

pub(crate) mod config;
pub(crate) mod init;
