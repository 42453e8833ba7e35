//! `anonymize on|off|rules` and `devices trust|untrust NAME`.

use ghostie_fs::anonymize::{Detector, Rules};
use ghostie_fs::config::Home;
use ghostie_fs::sync::{NoProgress, TrustReport, Vault};

use super::commands::{confirm, open_vault, print_json};
use super::errors::{CliError, EXIT_FAILURE};
use super::passphrase::CliPassphrase;
use super::{AnonymizeAction, Cli};

type CmdResult = Result<u8, CliError>;

fn rules_path(home: &Home) -> std::path::PathBuf {
    home.root().join("anonymize.toml")
}

/// Where this device keeps the rules file as it last wrote it: a rules file still
/// the same is no request to change anything, and one edited while the vault's
/// rules changed elsewhere must not silently undo that change.
fn applied_path(home: &Home) -> std::path::PathBuf {
    home.sync_dir().join("anonymize.applied.toml")
}

/// The rules `anonymize on` applies: the rules file's, when the owner edited it,
/// with the detectors given on the command line, if any; `None` keeps the rules in
/// force (or, the first time, every detector).
fn wanted_rules(
    home: &Home,
    vault: &Vault,
    detectors: Option<&[String]>,
) -> Result<Option<Rules>, CliError> {
    let path = rules_path(home);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(CliError::new(
                EXIT_FAILURE,
                format!("Cannot read {}: {e}.", path.display()),
            ))
        }
    };
    let applied = std::fs::read_to_string(applied_path(home)).ok();
    let in_force = vault.anonymization_rules()?;
    let edited = match &text {
        Some(t) if applied.as_deref() != Some(t.as_str()) => Some(
            Rules::parse(t)
                .map_err(|e| CliError::new(EXIT_FAILURE, format!("{}: {e}.", path.display())))?,
        ),
        _ => None,
    };
    if let (Some(_), Some(applied), Some(now)) = (&edited, &applied, &in_force) {
        let was = Rules::parse(applied).ok();
        if was.as_ref() != Some(now) {
            return Err(CliError::new(
                EXIT_FAILURE,
                format!(
                    "The vault's rules were changed on another device since {} was written:                      put your change into the rules 'ghostie-fs anonymize rules' shows (or delete the file to take them), then run this again.",
                    path.display()
                ),
            ));
        }
    }
    let base = edited.or_else(|| in_force.clone());
    Ok(match detectors {
        None => base.filter(|_| text.is_some() && applied.as_deref() != text.as_deref()),
        Some(names) => {
            let chosen: Vec<Detector> = names
                .iter()
                .filter_map(|n| Detector::from_name(n))
                .collect();
            Some(base.unwrap_or_default().with_detectors_replaced(chosen))
        }
    })
}

/// Keeps `<home>/anonymize.toml` saying the rules in force.
fn write_rules_file(home: &Home, vault: &Vault) -> Result<(), CliError> {
    if let Some(rules) = vault.anonymization_rules()? {
        let text = rules.to_toml();
        for path in [rules_path(home), applied_path(home)] {
            std::fs::write(&path, &text).map_err(|e| {
                CliError::new(
                    EXIT_FAILURE,
                    format!("Cannot write {}: {e}.", path.display()),
                )
            })?;
        }
    }
    Ok(())
}

fn report_json(report: &TrustReport) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or_default()
}

fn print_report(report: &TrustReport) {
    println!(
        "   Anonymization: {}",
        if report.enabled { "on" } else { "off" }
    );
    for rule in &report.rules {
        println!("   Rule: {rule}");
    }
    println!("   Trusted: {}", report.trusted.join(", "));
    if !report.waiting.is_empty() {
        println!(
            "   Waiting for the key: {} (each takes it after its next sync and a trusted device's next sync)",
            report.waiting.join(", ")
        );
    }
}

pub fn run(cli: &Cli, home: Home, pass: &CliPassphrase, action: &AnonymizeAction) -> CmdResult {
    let vault = open_vault(home.clone(), pass)?;
    confirm(&vault, pass)?;
    match action {
        AnonymizeAction::On { detectors, json } => {
            vault.poll(&NoProgress)?;
            let rules = wanted_rules(&home, &vault, detectors.as_deref())?;
            let report = vault.anonymize_on(rules)?;
            vault.publish(&NoProgress)?;
            write_rules_file(&home, &vault)?;
            if *json {
                print_json(&report_json(&report));
            } else if !cli.quiet {
                println!("🕶️  Anonymization is on.");
                print_report(&report);
                if report.resealed > 0 {
                    println!(
                        "   Sealed again under the rules: {} (untrusted devices see the new pseudonyms at their next pull)",
                        super::units::count(report.resealed, "file", "files")
                    );
                }
            }
        }
        AnonymizeAction::Off { json } => {
            let report = vault.anonymize_off()?;
            if *json {
                print_json(&report_json(&report));
            } else if !cli.quiet {
                println!("🔓 Anonymization is off: what is written from now on reaches every device as written.");
                print_report(&report);
            }
        }
        AnonymizeAction::Rules { json } => {
            let report = vault.anonymization_report()?;
            if *json {
                print_json(&match &report {
                    Some(r) => report_json(r),
                    None => {
                        serde_json::json!({"enabled": false, "rules": [], "trusted": [], "waiting": [], "resealed": 0})
                    }
                });
            } else {
                match &report {
                    Some(r) => print_report(r),
                    None => println!("   Anonymization was never turned on in this vault ('ghostie-fs anonymize on')."),
                }
                if let (Some(r), Ok(text)) = (&report, std::fs::read_to_string(rules_path(&home))) {
                    let edited = Rules::parse(&text)
                        .map(|f| f.describe() != r.rules)
                        .unwrap_or(true);
                    if edited {
                        println!(
                            "   {} differs from the rules in force: 'ghostie-fs anonymize on' applies it.",
                            rules_path(&home).display()
                        );
                    }
                }
            }
        }
    }
    Ok(0)
}

pub fn trust(
    cli: &Cli,
    home: Home,
    pass: &CliPassphrase,
    name: &str,
    trusted: bool,
    json: bool,
) -> CmdResult {
    let vault = open_vault(home, pass)?;
    confirm(&vault, pass)?;
    vault.poll(&NoProgress)?;
    let report = if trusted {
        vault.trust_device(name)?
    } else {
        vault.untrust_device(name)?
    };
    if json {
        print_json(&report_json(&report));
    } else if !cli.quiet {
        if trusted {
            println!("✅ '{name}' is trusted: it shows sensitive values as written.");
        } else {
            println!("✅ '{name}' is no longer trusted: the sensitive key was replaced, and nothing written from now on opens there.");
        }
        print_report(&report);
    }
    Ok(0)
}
