//! Settings that hold something of one job, named here so that they go
//! with the job: when retention (or an admin) deletes a job, its settings
//! under these names are deleted in the same transaction, so the settings
//! table does not grow with history. Every owner of such a setting names
//! it with these prefixes.

/// `approval:<job>`: a person approved the job's spending.
pub const APPROVAL: &str = "approval:";
/// `budget.job:<job>`: a child job's share of its family budget.
pub const FAMILY_SHARE: &str = "budget.job:";
/// `budget.returned:<job>`: a child's unspent share went back to its parent.
pub const SHARE_RETURNED: &str = "budget.returned:";
/// `github.seen:<job>`: the newest GitHub comment taken into the job's conversation.
pub const GITHUB_SEEN: &str = "github.seen:";
/// `github.reported:<job>`: the job's end was said on its issue.
pub const GITHUB_REPORTED: &str = "github.reported:";
/// `children.settled:<job>:<attempt>`: an attempt's wait for its children ended.
pub const CHILDREN_SETTLED: &str = "children.settled:";

/// The settings `<prefix><job>`.
pub(crate) const PER_JOB: [&str; 5] = [APPROVAL, FAMILY_SHARE, SHARE_RETURNED, GITHUB_SEEN, GITHUB_REPORTED];
/// The settings `<prefix><job>:<attempt>`.
pub(crate) const PER_ATTEMPT: [&str; 1] = [CHILDREN_SETTLED];
