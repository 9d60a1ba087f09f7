//! Access policy decisions (filled in by the policy issue).
