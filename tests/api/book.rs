//! The book (docs/src) is tested like code: every ```toml block is configuration that
//! `orderbridge check` accepts, every `orderbridge …` / `cargo run --release -- …`
//! command in a ```sh or ```console block parses with the CLI's own parser, every
//! `scripts/*.sh` named there exists and is executable, and the cheap read-only
//! commands (`check`, `--help`) run for real on the example. A failure names the
//! markdown file and line of the block.
//!
//! A ```toml block names the file it shows in its first line: `# connectors/x.toml`
//! (a whole file: it replaces that file, or is added) or `# config/orderbridge.toml
//! (part)` (a fragment: merged table by table into that file; an entry of an array of
//! tables replaces the entry with the same `id` or `name`, else it is added). Each block
//! is checked on its own copy of the example configuration with the vendor examples
//! (`examples/`), and with the whole new files shown elsewhere in the same chapter. A
//! `${NAME}` secret the block needs is set in check's environment (`secret_value`).

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;

use crate::helpers::*;

/// One fenced block: the line of its opening fence (1-based), its info string, its text.
#[derive(Debug, PartialEq)]
struct Block {
    line: usize,
    info: String,
    text: String,
}

/// The fenced blocks of a markdown text (``` fences, not nested).
fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let (mut open, mut indent): (Option<Block>, usize) = (None, 0);
    for (i, l) in md.lines().enumerate() {
        match (open.take(), l.trim_start().strip_prefix("```")) {
            (None, Some(info)) => {
                // A block inside a list item: its lines lose the fence's indentation.
                indent = l.len() - l.trim_start().len();
                open = Some(Block { line: i + 1, info: info.trim().to_owned(), text: String::new() });
            }
            (Some(b), Some(_)) => out.push(b),
            (Some(mut b), None) => {
                let keep = l.len() - l.trim_start().len();
                b.text.push_str(&l[indent.min(keep)..]);
                b.text.push('\n');
                open = Some(b);
            }
            (None, None) => {}
        }
    }
    out
}

/// Every markdown file of the book, relative to the repository, sorted.
fn book_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("docs/src"), &mut files);
    let mut names: Vec<String> =
        files.iter().map(|p| p.strip_prefix(repo()).unwrap().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What a ```toml block shows: the file (relative to the configuration directory) and
/// whether it is a part of it.
fn target(block: &Block) -> Result<(String, bool), String> {
    let first = block.text.lines().next().unwrap_or("");
    let named = first.strip_prefix("# ").unwrap_or("");
    let path = named.split([':', ' ']).next().unwrap_or("");
    let known = ["config/", "connectors/", "mappings/"].iter().any(|d| path.starts_with(d));
    if !known || !path.ends_with(".toml") {
        return Err(format!(
            "a ```toml block names its file in its first line (`# connectors/x.toml`, `# config/rules.toml (part)`), not `{first}`"
        ));
    }
    Ok((path.to_owned(), named[path.len()..].trim_start().starts_with("(part)")))
}

/// Merges `part` into `base`: tables key by key; an array of tables entry by entry
/// (the one with the same `id` or `name` is replaced, others are added); any other
/// value replaces the base's.
fn merge(base: &mut toml::Table, part: toml::Table) {
    for (key, value) in part {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(p)) => merge(b, p),
            (Some(toml::Value::Array(b)), toml::Value::Array(p)) if p.iter().all(toml::Value::is_table) => {
                for entry in p {
                    let key_of = |v: &toml::Value| ["id", "name"].iter().find_map(|k| v.get(k).cloned());
                    match key_of(&entry).and_then(|k| b.iter().position(|e| key_of(e) == Some(k.clone()))) {
                        Some(at) => b[at] = entry,
                        None => b.push(entry),
                    }
                }
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The `${NAME}` references without a default in `text`.
fn secret_names(text: &str) -> Vec<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .filter(|name| !name.contains(":-"))
        .map(str::to_owned)
        .collect()
}

/// The value a snippet's `${NAME}` gets: what the secret is in the tests, else a
/// 32-byte key in hex (long and unpublished, so `check` takes it anywhere).
fn secret_value(name: &str) -> String {
    match name {
        "DEMO_CRM_SECRET" => CRM_SECRET.to_owned(),
        n if n.ends_with("DATABASE_URL") => {
            "postgres://orderbridge:7c2f9e4b1a6d8c3e5f0a2b4d6e8f1a3c@127.0.0.1:5432/orderbridge".to_owned()
        }
        _ => "9d4e1f7a3c6b8e2d5f0a1c4e7b9d2f6a8c3e5b7d9f1a4c6e8b0d2f5a7c9e1b3d".to_owned(),
    }
}

/// The example configuration with the vendor examples, in a new temp dir.
fn example_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "127.0.0.1:9".parse().unwrap());
    for sub in ["connectors", "mappings"] {
        for e in std::fs::read_dir(repo().join("examples").join(sub)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.path().join(sub).join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// Writes a block into `dir` as its first line says (hermetic: the example's demo
/// secrets as the tests' files, its systems at a closed port).
fn apply(dir: &Path, block: &Block) -> Result<(), String> {
    let (file, part) = target(block)?;
    let text = hermetic(&block.text, "127.0.0.1:9".parse().unwrap());
    let path = dir.join(&file);
    if !part {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return Ok(());
    }
    let base = std::fs::read_to_string(&path).map_err(|e| format!("{file} (part): the example has no {file}: {e}"))?;
    let mut base: toml::Table = toml::from_str(&base).unwrap();
    let part: toml::Table = toml::from_str(&text).map_err(|e| format!("not TOML: {e}"))?;
    merge(&mut base, part);
    std::fs::write(&path, toml::to_string(&base).unwrap()).unwrap();
    Ok(())
}

/// `orderbridge check` on every ```toml block of one markdown text (`name` for the
/// messages): each problem as `name:line: …`.
fn toml_problems(name: &str, md: &str) -> Vec<String> {
    let all = blocks(md);
    let tomls: Vec<&Block> = all.iter().filter(|b| b.info == "toml").collect();
    let mut problems = Vec::new();
    for (i, block) in tomls.iter().enumerate() {
        let dir = example_dir();
        // The new whole files the chapter shows elsewhere (a connector a fragment names,
        // the mapping a connector names).
        let others: Vec<&&Block> = tomls
            .iter()
            .enumerate()
            .filter(|(j, b)| *j != i && target(b).is_ok_and(|(f, part)| !part && is_new(&f)))
            .map(|(_, b)| b)
            .collect();
        let mut needs: Vec<String> = VENDOR_SECRETS.iter().map(|s| (*s).to_owned()).collect();
        for b in others.iter().copied().copied().chain([*block]) {
            if let Err(e) = apply(dir.path(), b) {
                problems.push(format!("{name}:{}: {e}", b.line));
            }
            needs.extend(secret_names(&b.text));
        }
        let mut cmd = Command::new(bin());
        cmd.args(["check", "--config-dir"]).arg(dir.path());
        for n in &needs {
            cmd.env(n, secret_value(n));
        }
        let out = cmd.output().unwrap();
        if out.status.code() != Some(0) {
            problems.push(format!(
                "{name}:{}: `orderbridge check` refuses the block ({}):\n{}{}",
                block.line,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    problems
}

/// Whether neither the example nor the vendor examples have `file`.
fn is_new(file: &str) -> bool {
    !repo().join(file).exists() && !repo().join("examples").join(file).exists()
}

/// Stands for an unquoted shell operator (`|`, `;`, `&`, `<`, `>`) among the words:
/// the command before it ends there.
const OPERATOR: &str = "\u{0}";

/// The words of one shell command line: quotes and backslashes as the shell reads
/// them; a word starting with `#` ends the line; an unquoted operator is a word of
/// its own, `OPERATOR`.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut word, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => (quote, any) = (Some(c), true),
            (None, '\\') => word.extend(chars.next()),
            (None, '#') if !any => break,
            (None, '|' | ';' | '&' | '<' | '>') => {
                if matches!(c, '<' | '>') && any && word.chars().all(|d| d.is_ascii_digit()) {
                    (any, _) = (false, word.clear()); // a descriptor: `2>&1`
                }
                if any {
                    out.push(std::mem::take(&mut word));
                }
                (any, _) = (false, out.push(OPERATOR.to_owned()));
            }
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, c) => (any, _) = (true, word.push(c)),
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// The commands of a shell block with their lines: continuation lines joined, a
/// `$ ` prompt removed, here-documents left out, a pipeline or list split into its
/// commands.
fn commands(block: &Block) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let (mut pending, mut start, mut heredoc): (String, usize, Option<String>) = (String::new(), 0, None);
    for (i, l) in block.text.lines().enumerate() {
        let line = block.line + 1 + i;
        if let Some(tag) = &heredoc {
            if l.trim() == tag {
                heredoc = None;
            }
            continue;
        }
        if pending.is_empty() {
            start = line;
        }
        let l = l.strip_prefix("$ ").unwrap_or(l);
        if let Some(cont) = l.strip_suffix('\\') {
            pending.push_str(cont);
            continue;
        }
        pending.push_str(l);
        if let Some(at) = pending.find("<<") {
            heredoc = Some(
                pending[at + 2..]
                    .trim_start_matches('-')
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_matches(['\'', '"'])
                    .to_owned(),
            );
        }
        let words = words(&std::mem::take(&mut pending));
        for command in words.split(|w| w == OPERATOR).filter(|c| !c.is_empty()) {
            out.push((start, command.to_vec()));
        }
    }
    out
}

/// The orderbridge arguments of a command (after `orderbridge` or `cargo run
/// --release --`, past `sudo -u USER` and `NAME=value` prefixes), if it is one.
fn orderbridge_args(words: &[String]) -> Option<Vec<String>> {
    let mut w = words;
    loop {
        match w {
            [first, rest @ ..] if first.contains('=') && !first.starts_with('-') => w = rest,
            [sudo, u, _, rest @ ..] if sudo == "sudo" && u == "-u" => w = rest,
            [sudo, rest @ ..] if sudo == "sudo" => w = rest,
            _ => break,
        }
    }
    match w {
        [ob, rest @ ..] if ob == "orderbridge" => Some(rest.to_vec()),
        [cargo, run, release, dashes, rest @ ..]
            if cargo == "cargo" && run == "run" && release == "--release" && dashes == "--" =>
        {
            Some(rest.to_vec())
        }
        _ => None,
    }
}

fn is_shell(info: &str) -> bool {
    matches!(info, "sh" | "console" | "bash" | "shell")
}

/// The CLI's parser on every orderbridge command, and the scripts named, of one
/// markdown text: each problem as `name:line: …`.
fn command_problems(name: &str, md: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for block in blocks(md).iter().filter(|b| is_shell(&b.info)) {
        for (line, words) in commands(block) {
            for script in words.iter().filter(|w| w.starts_with("scripts/") && w.ends_with(".sh")) {
                if !is_executable(&repo().join(script)) {
                    problems.push(format!("{name}:{line}: `{script}` is not an executable file of the repository"));
                }
            }
            let Some(args) = orderbridge_args(&words) else { continue };
            if let Err(e) =
                orderbridge::cli::Cli::try_parse_from(std::iter::once("orderbridge".to_owned()).chain(args.clone()))
            {
                let asked =
                    matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion);
                if !asked {
                    problems.push(format!("{name}:{line}: `orderbridge {}`: {}", args.join(" "), e.render()));
                }
            }
        }
    }
    problems
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether a command is read-only and cheap enough to run on the example: `check`
/// (not `--online`) or `--help`, with no `--config-dir` of its own.
fn runnable(args: &[String]) -> bool {
    let has = |a: &str| args.iter().any(|x| x == a);
    !has("--config-dir") && ((args.first().is_some_and(|a| a == "check") && !has("--online")) || has("--help"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(repo().join(name)).unwrap()
}

#[test]
fn every_toml_block_in_the_book_passes_check() {
    let files = book_files();
    let count: usize = files.iter().map(|f| blocks(&read(f)).iter().filter(|b| b.info == "toml").count()).sum();
    assert!(count >= 20, "the admin book shows at least 20 configuration blocks, found {count}");
    let problems: Vec<String> = files.iter().flat_map(|f| toml_problems(f, &read(f))).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_command_in_the_book_parses_and_every_script_exists() {
    let files = book_files();
    let problems: Vec<String> = files.iter().flat_map(|f| command_problems(f, &read(f))).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let count = files
        .iter()
        .flat_map(|f| blocks(&read(f)))
        .filter(|b| is_shell(&b.info))
        .flat_map(|b| commands(&b))
        .filter(|(_, w)| orderbridge_args(w).is_some())
        .count();
    assert!(count >= 8, "the book shows at least 8 orderbridge commands in shell blocks, found {count}");
}

#[test]
fn the_cheap_commands_in_the_book_run_on_the_example() {
    let dir = example_dir();
    let mut ran = Vec::new();
    for f in book_files() {
        for block in blocks(&read(&f)).iter().filter(|b| is_shell(&b.info)) {
            for (line, words) in commands(block) {
                let Some(args) = orderbridge_args(&words).filter(|a| runnable(a)) else { continue };
                let out = Command::new(bin())
                    .args(&args)
                    .arg("--config-dir")
                    .arg(dir.path())
                    .envs(VENDOR_SECRETS.map(|s| (s, secret_value(s))))
                    .output()
                    .unwrap();
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                assert_eq!(out.status.code(), Some(0), "{f}:{line}: `orderbridge {}`:\n{text}", args.join(" "));
                if args[0] == "check" {
                    assert!(text.contains("files checked, 0 problems"), "{f}:{line}:\n{text}");
                }
                ran.push(format!("{f}:{line}"));
            }
        }
    }
    // The quick start's `check` at least.
    assert!(ran.iter().any(|r| r.starts_with("docs/src/admin/installation.md")), "{ran:?}");
}

#[test]
fn the_extractors_read_blocks_commands_and_file_names() {
    let md = "text\n```sh\n$ orderbridge check   # exit 0\nFOO=1 cargo run --release -- orders \\\n  show 'ord_1'\npython3 - <<'EOF'\norderbridge nonsense\nEOF\n```\n\n```toml\n# config/rules.toml (part)\n[sla]\n```\n";
    let b = blocks(md);
    assert_eq!(b.iter().map(|b| (b.line, b.info.as_str())).collect::<Vec<_>>(), [(2, "sh"), (11, "toml")]);
    let c: Vec<(usize, Option<Vec<String>>)> =
        commands(&b[0]).into_iter().map(|(l, w)| (l, orderbridge_args(&w))).collect();
    let s = |v: &[&str]| Some(v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>());
    assert_eq!(c, [(3, s(&["check"])), (4, s(&["orders", "show", "ord_1"])), (6, None), (6, None)]);
    assert_eq!(target(&b[1]), Ok(("config/rules.toml".to_owned(), true)));
    assert_eq!(secret_names("a = \"${A}\"\nb = \"${B:-demo}\""), ["A"]);
    // A pipeline or list is its commands; a redirection's descriptor is not an argument.
    let md = "```sh\norderbridge outbox dead 2>&1 | awk '{print $1}' && orderbridge audit verify > out.txt\n```\n";
    let c: Vec<Option<Vec<String>>> = commands(&blocks(md)[0]).into_iter().map(|(_, w)| orderbridge_args(&w)).collect();
    assert_eq!(
        c.into_iter().flatten().collect::<Vec<_>>(),
        [s(&["outbox", "dead"]), s(&["audit", "verify"])].map(Option::unwrap)
    );
}

#[test]
fn a_bad_snippet_fails_naming_its_file_and_line() {
    let md = "# A chapter\n\n```sh\norderbridge chek\ncargo run --release -- orders list --colour\nscripts/no-such-script.sh\n```\n\n```toml\n# connectors/demo-erp.toml (part)\ntimeout_secs = \"ten\"\n```\n\n```toml\nkind = \"rest\"\n```\n";
    let problems = command_problems("bad.md", md);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].starts_with("bad.md:4: `orderbridge chek`: error: unrecognized subcommand 'chek'"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].starts_with("bad.md:5: `orderbridge orders list --colour`:") && problems[1].contains("--colour"),
        "{}",
        problems[1]
    );
    assert_eq!(problems[2], "bad.md:6: `scripts/no-such-script.sh` is not an executable file of the repository");
    let problems = toml_problems("bad.md", md);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].starts_with("bad.md:9: `orderbridge check` refuses the block"), "{}", problems[0]);
    assert!(problems[0].contains("connectors/demo-erp.toml:3:16: invalid type: string \"ten\""), "{}", problems[0]);
    // A block that names no file is refused as such (the example it left alone passes).
    assert!(problems[1].starts_with("bad.md:14: a ```toml block names its file in its first line"), "{}", problems[1]);
}

/// The Chinese terms of the glossary are the ones people see: each is in the shipped
/// zh-CN templates or in the labels of `src/locale.rs`.
#[test]
fn every_chinese_term_of_the_glossary_is_shown_somewhere() {
    fn all_text(dir: &Path, out: &mut String) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                all_text(&p, out);
            } else {
                out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    let mut shown = read("src/locale.rs");
    all_text(&repo().join("config/templates/zh-CN"), &mut shown);
    let glossary = read("docs/src/admin/glossary.md");
    let terms: Vec<&str> = glossary
        .lines()
        .filter_map(|l| l.strip_prefix("| ")?.split(" |").next())
        .filter(|t| t.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)))
        .collect();
    assert!(terms.len() >= 60, "{terms:?}");
    let missing: Vec<&&str> = terms.iter().filter(|t| !shown.contains(**t)).collect();
    assert!(missing.is_empty(), "glossary terms nobody sees: {missing:?}");
}
