//! `memwarden snapshot`: one reading of the machine, as a table or as the JSON contract.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::cli::Global;
use crate::view;

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Print the snapshot as one JSON object (the documented contract) instead of a table
    #[arg(long)]
    pub json: bool,
    /// How many processes the table lists (by GPU memory, then host memory); 0 lists all
    #[arg(long, default_value_t = 15, value_name = "N")]
    pub top: usize,
}

pub fn run(g: &Global, args: SnapshotArgs) -> Result<ExitCode> {
    let mut probe = super::probe(g)?;
    let snap = probe.snapshot()?;
    if args.json {
        println!("{}", serde_json::to_string(&snap)?);
    } else {
        if let Some(notice) = probe.gpu_notice(&snap.gpus) {
            eprintln!("memwarden: {notice}");
        }
        print!("{}", view::render_snapshot(&snap, args.top));
    }
    Ok(ExitCode::SUCCESS)
}
