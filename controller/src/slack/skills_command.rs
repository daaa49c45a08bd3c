//! `/agent skills …`: a person's view of the company skills library
//! (docs/skills.md). Listing, installing and proposing go through the
//! skills service; admins review proposals here too.

use crate::skills::{Overview, Proposal, Skills};
use clawswarm_certs::AgentId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkillsCommand {
    List,
    Add(String),
    Remove(String),
    Propose(String),
    /// Admins: pending and reviewed proposals.
    Proposals,
    Approve(String),
    Reject(String),
    /// Bad arguments: how to use it.
    Usage(String),
}

impl SkillsCommand {
    pub fn is_admin_only(&self) -> bool {
        matches!(self, Self::Proposals | Self::Approve(_) | Self::Reject(_))
    }
}

pub const USAGE: &str = "• `/agent skills` — what your agent has, and what the company library offers it\n\
     • `/agent skills add NAME` — install a skill from the library\n\
     • `/agent skills remove NAME` — remove a library skill\n\
     • `/agent skills propose NAME` — offer one of your own skills to the library";

pub const ADMIN_USAGE: &str = "• `/agent skills proposals` — skills people offered\n\
     • `/agent skills approve NAME` / `reject NAME` — review one";

pub fn parse(args: &[&str]) -> SkillsCommand {
    let verb = args.first().map(|w| w.to_ascii_lowercase());
    let name = args.get(1).map(|s| (*s).to_owned());
    let needs_name = |make: fn(String) -> SkillsCommand, verb: &str| match (&name, args.len()) {
        (Some(n), 2) => make(n.clone()),
        _ => SkillsCommand::Usage(format!("Usage: `/agent skills {verb} NAME`")),
    };
    match verb.as_deref() {
        None | Some("list") if args.len() <= 1 => SkillsCommand::List,
        Some("add" | "install") => needs_name(SkillsCommand::Add, "add"),
        Some("remove" | "uninstall") => needs_name(SkillsCommand::Remove, "remove"),
        Some("propose") => needs_name(SkillsCommand::Propose, "propose"),
        Some("help") => SkillsCommand::Usage(USAGE.into()),
        Some("proposals") if args.len() == 1 => SkillsCommand::Proposals,
        Some("approve") => needs_name(SkillsCommand::Approve, "approve"),
        Some("reject") => needs_name(SkillsCommand::Reject, "reject"),
        _ => SkillsCommand::Usage(format!("I don't know that.\n{USAGE}")),
    }
}

fn overview_text(o: &Overview) -> String {
    let mut t = String::new();
    let groups = [("From the company library", "library"), ("Your own", "own")];
    for (title, source) in groups {
        let mine: Vec<String> = o
            .installed
            .iter()
            .filter(|s| s.source == source)
            .map(|s| {
                let state = if s.eligible {
                    ""
                } else {
                    " _(not usable yet)_"
                };
                format!("• `{}` — {}{state}", s.name, s.description)
            })
            .collect();
        if !mine.is_empty() {
            t.push_str(&format!("*{title}*\n{}\n", mine.join("\n")));
        }
    }
    if o.offered.is_empty() {
        t.push_str("The company library has nothing more for you.");
    } else {
        let offered: Vec<String> = o
            .offered
            .iter()
            .map(|s| format!("• `{}` — {}", s.name, s.description))
            .collect();
        t.push_str(&format!(
            "*The company library offers* (`/agent skills add NAME`)\n{}",
            offered.join("\n")
        ));
    }
    t
}

fn proposal_line(p: &Proposal) -> String {
    format!(
        "• `{}` ({}) from <@{}> — {} [{} files]",
        p.name,
        p.state.as_str(),
        p.owner,
        p.description,
        p.files.len()
    )
}

/// Run `cmd` for the person whose agent is `agent` (`None`: they have
/// none); the text to answer with.
pub async fn execute(
    skills: &Skills,
    cmd: SkillsCommand,
    agent: Option<&AgentId>,
    is_admin: bool,
) -> String {
    if cmd.is_admin_only() && !is_admin {
        return "Only admins can review skill proposals.".into();
    }
    let need_agent = || agent.ok_or("You don't have an agent yet. Run `/agent setup` first.");
    let answer: Result<String, String> = async {
        match cmd {
            SkillsCommand::Usage(text) => Ok(text),
            SkillsCommand::List => {
                let o = skills.overview(need_agent()?).await.map_err(|e| e.to_string())?;
                Ok(overview_text(&o))
            }
            SkillsCommand::Add(name) => {
                let o = skills.add(need_agent()?, &name).await.map_err(|e| e.to_string())?;
                Ok(format!(
                    ":white_check_mark: Installed `{name}` from the company library. It is read-only; your next message can use it.\n{}",
                    overview_text(&o)
                ))
            }
            SkillsCommand::Remove(name) => {
                skills.remove(need_agent()?, &name).await.map_err(|e| e.to_string())?;
                Ok(format!("Removed `{name}`."))
            }
            SkillsCommand::Propose(name) => {
                let p = skills.propose(need_agent()?, &name).await.map_err(|e| e.to_string())?;
                Ok(format!(
                    ":inbox_tray: Proposed `{}` ({} files) for the company library; an admin will review it.",
                    p.name,
                    p.files.len()
                ))
            }
            SkillsCommand::Proposals => {
                let all = skills.proposals().await.map_err(|e| e.to_string())?;
                if all.is_empty() {
                    return Ok("No skill proposals.".into());
                }
                let lines: Vec<String> = all.iter().take(50).map(proposal_line).collect();
                Ok(format!("*Skill proposals*\n{}", lines.join("\n")))
            }
            SkillsCommand::Approve(name) => {
                let p = skills.review(&name, true).await.map_err(|e| e.to_string())?;
                Ok(format!("Approved `{}`: it is in the company library now.", p.name))
            }
            SkillsCommand::Reject(name) => {
                let p = skills.review(&name, false).await.map_err(|e| e.to_string())?;
                Ok(format!("Rejected `{}`.", p.name))
            }
        }
    }
    .await;
    answer.unwrap_or_else(|e| format!(":warning: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_commands_and_missing_names_say_how() {
        assert_eq!(parse(&[]), SkillsCommand::List);
        assert_eq!(
            parse(&["add", "pipeline-status"]),
            SkillsCommand::Add("pipeline-status".into())
        );
        assert_eq!(parse(&["REMOVE", "x"]), SkillsCommand::Remove("x".into()));
        assert_eq!(
            parse(&["propose", "mine"]),
            SkillsCommand::Propose("mine".into())
        );
        assert_eq!(
            parse(&["approve", "mine"]),
            SkillsCommand::Approve("mine".into())
        );
        assert!(parse(&["approve", "mine"]).is_admin_only());
        assert!(!parse(&["add", "x"]).is_admin_only());
        assert!(matches!(parse(&["add"]), SkillsCommand::Usage(u) if u.contains("add NAME")));
        assert!(matches!(parse(&["add", "a", "b"]), SkillsCommand::Usage(_)));
        assert!(matches!(parse(&["frobnicate"]), SkillsCommand::Usage(_)));
    }
}
