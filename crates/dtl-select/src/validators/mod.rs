//! The validators, one file each, and the list of all of them.
//!
//! | name | paper | score (higher is better) |
//! |---|---|---|
//! | `source-acc` | the baseline every validator must beat | accuracy on the source validation split |
//! | `entropy` | Morerio, Cavazza & Murino 2018 | minus the mean entropy of the target predictions |
//! | `im` | Shi & Sha 2012 (information maximisation) | entropy of the mean target prediction minus the mean entropy |
//! | `bnm` | Cui et al. 2020 (batch nuclear-norm maximisation) | nuclear norm of the target probability matrix / n |
//! | `snd` | Saito et al. 2021 (soft neighborhood density) | mean entropy of each target sample's soft neighbourhood |
//! | `iwcv` | Sugiyama, Krauledat & Müller 2007 | minus the importance-weighted source validation loss |
//! | `dev` | You et al. 2019 (deep embedded validation) | minus IWCV's loss with DEV's control variate |
//! | `classami` | Musgrave, Belongie & Lim 2022 | AMI of k-means clusters of target features and predicted classes |
//! | `mixval` | Hu et al. 2023 (MixVal) | accuracy on mixed target samples against their pseudo-labels |
//! | `reverse` | Zhong et al. 2010 (reverse validation) | source accuracy of a network trained on the pseudo-labelled target |

pub mod bnm;
pub mod classami;
pub mod dev;
pub mod entropy;
pub mod im;
pub mod iwcv;
pub mod mixval;
pub mod reverse;
pub mod snd;
pub mod source_acc;

pub use bnm::Bnm;
pub use classami::ClassAmi;
pub use dev::Dev;
pub use entropy::Entropy;
pub use im::Im;
pub use iwcv::Iwcv;
pub use mixval::MixVal;
pub use reverse::Reverse;
pub use snd::Snd;
pub use source_acc::SourceAcc;

use crate::Validator;

/// Every validator with its default settings, in the order reports list them.
pub fn all() -> Vec<Box<dyn Validator>> {
    vec![
        Box::new(SourceAcc),
        Box::new(Entropy),
        Box::new(Im),
        Box::new(Bnm),
        Box::new(Snd::default()),
        Box::new(Iwcv::default()),
        Box::new(Dev::default()),
        Box::new(ClassAmi::default()),
        Box::new(MixVal::default()),
        Box::new(Reverse::default()),
    ]
}

/// The names of [`all`].
pub fn names() -> Vec<&'static str> {
    all().iter().map(|v| v.name()).collect()
}
