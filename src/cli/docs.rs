//! `completions` and `man`: the shell completion scripts and the manual pages, both
//! made from the same definition of the commands that parses them.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::errors::{CliError, EXIT_FAILURE};
use super::Cli;

/// Prints `shell`'s completion script for ghostie-fs.
pub fn completions(shell: clap_complete::Shell) -> Result<u8, CliError> {
    let mut command = Cli::command();
    // Made in memory first: the generator panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "ghostie-fs", &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        // `completions bash | head` is no failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(CliError::new(
            EXIT_FAILURE,
            format!("Cannot write the completion script: {e}."),
        )),
    }
}

/// Writes one manual page per command into `dir`: `ghostie-fs.1`, then
/// `ghostie-fs-<command>.1` (and `ghostie-fs-<command>-<sub>.1`), as git names its own.
pub fn man_pages(dir: &Path) -> Result<Vec<String>, CliError> {
    let fail = |what: &Path, e: std::io::Error| {
        CliError::new(
            EXIT_FAILURE,
            format!(
                "Cannot write the manual pages into {}: {e}.",
                what.display()
            ),
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let mut command = Cli::command();
    command.build();
    let mut written = Vec::new();
    write_page(dir, &command, "ghostie-fs", &mut written).map_err(|e| fail(dir, e))?;
    Ok(written)
}

fn write_page(
    dir: &Path,
    command: &clap::Command,
    name: &str,
    written: &mut Vec<String>,
) -> std::io::Result<()> {
    let page = command.clone().name(name.to_owned());
    let file = format!("{name}.1");
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    std::fs::write(dir.join(&file), out)?;
    written.push(file);
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_page(dir, sub, &format!("{name}-{}", sub.get_name()), written)?;
    }
    Ok(())
}
