//! George sources: folder, Git and work-file sources of desired state
