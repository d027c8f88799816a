//! Verification policy, as a recipe states it and the job applies it.

/// How much of the flash a job reads back after programming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyPolicy {
    /// Read back every byte the image covers, including pages left blank (0xFF) after erase.
    #[default]
    Full,
    /// Read back only the pages that were written.
    Written,
    /// No read-back (recorded as such; not recommended for production).
    None,
}

impl VerifyPolicy {
    pub fn name(self) -> &'static str {
        match self {
            VerifyPolicy::Full => "full",
            VerifyPolicy::Written => "written",
            VerifyPolicy::None => "none",
        }
    }
}
