//! `mailferry demo`: a complete move with nothing to set up, told step by step.

use crate::progress;
use crate::render::print_json;
use mailferry_bench::demo;
use mailferry_control::{moving, AppError};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Directory for everything the demo creates.
    #[arg(long, default_value = "mailferry-demo")]
    data: PathBuf,
    /// Messages in the generated mailbox.
    #[arg(long, default_value_t = 600)]
    messages: usize,
    /// Print the demo's result as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs the demo; fails if the exported mailbox differs from the source.
pub async fn run(a: DemoArgs, tty: bool) -> Result<(), AppError> {
    let board = (tty && !a.json).then(|| progress::Board::new(progress::Style::Bars));
    let out = demo::run_demo(&a.data, a.messages, board.map(|b| b as _)).await?;
    if a.json {
        print_json(&out);
    } else {
        print_steps(&out);
    }
    if !out.comparison.is_identical() || !out.exported.damaged.is_empty() {
        return Err(AppError::Failed(
            "the exported mailbox differs from the source".into(),
        ));
    }
    Ok(())
}

/// The demo's five steps, each with the file or directory it left behind.
fn print_steps(out: &demo::DemoOutcome) {
    println!("mailferry demo: a complete move through the real pipeline\n");
    if out.generated_messages > 0 {
        println!(
            "1. generated a sample mailbox of {} messages   {}",
            out.generated_messages,
            out.source.display()
        );
    } else {
        println!(
            "1. reused the sample mailbox                    {}",
            out.source.display()
        );
    }
    println!(
        "2. key file (keep it secret, keep a copy)         {}",
        out.key_file.display()
    );
    println!(
        "   recovery key (store it off this machine)       {}",
        out.recovery_key_file.display()
    );
    println!(
        "   encrypted volume                               {}",
        out.volume.display()
    );
    println!("3. {}", moving::summary(&out.report));
    println!(
        "   move report                                    {}",
        out.state.join("report.json").display()
    );
    println!(
        "4. exported {} messages ({:.1} MB)              {}",
        out.exported.exported,
        out.exported.bytes as f64 / 1e6,
        out.export.display()
    );
    println!(
        "5. compared source and export: {} identical, {} missing, {} extra, {} different",
        out.comparison.identical,
        out.comparison.missing.len(),
        out.comparison.extra.len(),
        out.comparison.different.len()
    );
}
