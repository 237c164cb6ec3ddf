//! The man page and the shell completions the package ships are generated
//! from the clap definitions (`usb9pfsd::cli::Cli`), so they cannot drift
//! from the binary: this test regenerates them and fails if the files in
//! `packaging/generated/` differ. `USB9PFSD_REGENERATE=1 cargo test --test
//! generated_docs` rewrites them (commit the result). The hand-written part of
//! the man page (what each command does, the config reference, files, exit
//! statuses) lives in `packaging/man/usb9pfsd.8.in`; the generated part is
//! its SYNOPSIS and OPTIONS, and the version and date on its title line.
//! This file must never write anything unless asked to.

use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use usb9pfsd::cli::Cli;

const GENERATED: &str = "packaging/generated";
const MAN_TEMPLATE: &str = "packaging/man/usb9pfsd.8.in";
const REGENERATE: &str = "USB9PFSD_REGENERATE";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// clap_mangen's rendering of one section of `cmd`, without its `.SH` line.
fn section(cmd: &Command, render: fn(&clap_mangen::Man, &mut dyn std::io::Write) -> std::io::Result<()>) -> String {
    let mut buf = Vec::new();
    render(&clap_mangen::Man::new(cmd.clone()), &mut buf).expect("render into memory");
    let text = String::from_utf8(buf).expect("roff is UTF-8");
    text.lines().filter(|l| !l.starts_with(".SH ")).map(|l| format!("{l}\n")).collect()
}

fn visible_subcommands(cmd: &Command) -> Vec<&Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect()
}

/// One synopsis line per subcommand: `usb9pfsd [-v] SUBCOMMAND [--opt VALUE]...`
/// (the options before the subcommand, `forward`'s selection, on its line).
fn synopsis(cmd: &Command) -> String {
    let mut out = String::new();
    let global: Vec<&clap::Arg> = cmd.get_arguments().filter(|a| !a.is_hide_set() && !is_builtin(a)).collect();
    for sub in visible_subcommands(cmd) {
        out.push_str("\\fBusb9pfsd\\fR");
        for arg in &global {
            // -v goes with every subcommand; --id/--path/--serial only say
            // "`forward` only", and are shown with it
            if arg.is_global_set() || sub.get_name() == "forward" {
                out.push_str(&format!(" {}", synopsis_arg(arg)));
            }
        }
        out.push_str(&format!(" \\fB{}\\fR", roff_escape(sub.get_name())));
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set() && !is_builtin(a)) {
            out.push_str(&format!(" {}", synopsis_arg(arg)));
        }
        out.push_str("\n.br\n");
    }
    out.push_str("\\fBusb9pfsd\\fR [\\fB\\-h\\fR|\\fB\\-\\-help\\fR|\\fB\\-V\\fR|\\fB\\-\\-version\\fR]\n");
    out
}

fn is_builtin(arg: &clap::Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

/// `[--name VALUE]`, `[-s|--server HOST]`, `[-v]...`, `[PATH]` in roff.
fn synopsis_arg(arg: &clap::Arg) -> String {
    let value =
        || arg.get_value_names().and_then(|v| v.first()).map(|v| v.to_string()).unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    if arg.is_positional() {
        return format!("[\\fI{}\\fR]", roff_escape(&value()));
    }
    let mut names = Vec::new();
    if let Some(c) = arg.get_short() {
        names.push(format!("\\fB\\-{c}\\fR"));
    }
    if let Some(l) = arg.get_long() {
        names.push(format!("\\fB\\-\\-{}\\fR", roff_escape(l)));
    }
    let takes_value = arg.get_action().takes_values();
    let repeat = if matches!(arg.get_action(), clap::ArgAction::Count) { "..." } else { "" };
    if takes_value {
        format!("[{} \\fI{}\\fR]{repeat}", names.join("|"), roff_escape(&value()))
    } else {
        format!("[{}]{repeat}", names.join("|"))
    }
}

/// OPTIONS: the options before the subcommand, then each subcommand's, with
/// its one-line description.
fn options(cmd: &Command) -> String {
    let mut out = String::from(".SH OPTIONS\nBefore the subcommand (\\fB\\-v\\fR anywhere):\n");
    out.push_str(&section(cmd, clap_mangen::Man::render_options_section));
    for sub in visible_subcommands(cmd) {
        let mut name = sub.get_name().to_string();
        let aliases: Vec<&str> = sub.get_visible_aliases().collect();
        if !aliases.is_empty() {
            name = format!("{name} (alias {})", aliases.join(", "));
        }
        out.push_str(&format!(".SS \"{name}\"\n"));
        if let Some(about) = sub.get_about() {
            out.push_str(&format!("{}\n", roff_escape(&about.to_string())));
        }
        let opts = section(sub, clap_mangen::Man::render_options_section);
        if opts.trim().is_empty() {
            out.push_str(".PP\nNo options of its own.\n");
        } else {
            out.push_str(&opts);
        }
    }
    out
}

fn roff_escape(s: &str) -> String {
    let s = s.replace('\\', "\\\\").replace('-', "\\-");
    // a line starting with . or ' would be a roff request
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The date of packaging/changelog's latest entry, as YYYY-MM-DD: the man
/// page's date moves with a release, not with the day the test runs.
fn changelog_date() -> String {
    let log = read(&repo().join("packaging/changelog"));
    let line = log.lines().find(|l| l.starts_with(" -- ")).expect("packaging/changelog has a trailer line");
    // " -- Name <mail>  Wed, 25 Nov 2026 14:00:00 +0000"
    let date = line.rsplit("  ").next().expect("two spaces before the date");
    let parts: Vec<&str> = date.split_whitespace().collect();
    assert!(parts.len() >= 4, "changelog date '{date}' is not RFC 2822");
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = months.iter().position(|m| *m == parts[2]).unwrap_or_else(|| panic!("month in '{date}'")) + 1;
    let day: u32 = parts[1].parse().unwrap_or_else(|_| panic!("day in '{date}'"));
    format!("{}-{month:02}-{day:02}", parts[3])
}

fn man_page() -> String {
    let cmd = Cli::command();
    let template = read(&repo().join(MAN_TEMPLATE));
    for marker in ["@SYNOPSIS@", "@OPTIONS@", "@VERSION@", "@DATE@"] {
        assert!(template.contains(marker), "{MAN_TEMPLATE} lost its {marker} marker");
    }
    let mut out =
        String::from(".\\\" Generated from packaging/man/usb9pfsd.8.in and src/cli.rs by tests/generated_docs.rs: do not edit.\n");
    // the template's own header comment is about the template: left out
    let body = template.lines().skip_while(|l| l.starts_with(".\\\""));
    for line in body {
        match line {
            ".\\\" @SYNOPSIS@" => out.push_str(&synopsis(&cmd)),
            ".\\\" @OPTIONS@" => out.push_str(&options(&cmd)),
            l => {
                out.push_str(&l.replace("@VERSION@", env!("CARGO_PKG_VERSION")).replace("@DATE@", &changelog_date()));
                out.push('\n');
            }
        }
    }
    out
}

fn completion(shell: Shell) -> String {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "usb9pfsd", &mut buf);
    String::from_utf8(buf).expect("completions are UTF-8")
}

/// Every file the package ships from packaging/generated/, and its content now.
fn generated() -> Vec<(&'static str, String)> {
    vec![
        ("usb9pfsd.8", man_page()),
        ("usb9pfsd.bash", completion(Shell::Bash)),
        ("_usb9pfsd", completion(Shell::Zsh)),
        ("usb9pfsd.fish", completion(Shell::Fish)),
    ]
}

#[test]
fn shipped_man_page_and_completions_match_the_cli() {
    let regenerate = std::env::var_os(REGENERATE).is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, want) in generated() {
        let path = repo().join(GENERATED).join(name);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have == want {
            continue;
        }
        if regenerate {
            std::fs::write(&path, &want).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            eprintln!("rewrote {}", path.display());
        } else {
            stale.push(format!("{GENERATED}/{name}"));
        }
    }
    assert!(
        stale.is_empty(),
        "{} differ from what src/cli.rs (and {MAN_TEMPLATE}) generate now: run `{REGENERATE}=1 cargo test --test generated_docs` and commit the result",
        stale.join(", ")
    );
}

/// Every subcommand clap knows is in the man page, and so is every long
/// option of each: the page is generated, so this fails only if generation
/// leaves something out (a planted fault: drop a subcommand's options).
#[test]
fn man_page_names_every_subcommand_and_option() {
    let page = man_page();
    let cmd = Cli::command();
    for sub in visible_subcommands(&cmd) {
        assert!(page.contains(&format!(".SS \"{}", sub.get_name())), "man page has no OPTIONS entry for `{}`", sub.get_name());
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(page.contains(&roff), "man page lacks `{} --{long}`", sub.get_name());
            }
        }
    }
}

/// The completions know the subcommands (the lead's additions included).
#[test]
fn completions_offer_every_subcommand() {
    let cmd = Cli::command();
    for (shell, text) in [("bash", completion(Shell::Bash)), ("zsh", completion(Shell::Zsh)), ("fish", completion(Shell::Fish))] {
        for sub in visible_subcommands(&cmd) {
            assert!(text.contains(sub.get_name()), "{shell} completion lacks `{}`", sub.get_name());
        }
    }
}
