//! Named seed streams: every random choice of a run draws from a stream derived from the run's one
//! seed, one derivation per purpose, all of them listed here.
//!
//! A run has a single seed (`train.seed`). Initialisation, dropout, batch order, augmentation,
//! data subsets, estimators and discriminators each need their own generator, and two purposes
//! must never share one (a change to the augmentation would otherwise reorder the batches). Each
//! purpose is a [`Stream`] and [`Stream::seed`] turns the run seed into that stream's seed; the
//! generators are then seeded with `rand_chacha::ChaCha8Rng::seed_from_u64`, a portable RNG, so a
//! CPU run repeats exactly on any machine.
//!
//! The derivations are the ones dtl's results were produced with (an XOR or an addition of a fixed
//! constant per purpose), kept as they are so that every recorded fixed-seed result stays
//! bit-identical; a new purpose adds a variant and a constant of its own.
//!
//! ```
//! use dtl_core::seed::Stream;
//!
//! assert_eq!(Stream::Init.seed(7), 7);
//! assert_ne!(Stream::TargetOrder.seed(7), Stream::SourceOrder.seed(7));
//! // an epoch-indexed stream: one seed per re-estimation of instance weights
//! assert_eq!(Stream::Reestimate { epoch: 2 }.seed(7), 9);
//! ```

/// One purpose that draws random numbers, seeded from the run seed by [`Stream::seed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stream {
    /// The model's parameter initialisation (the run seed itself).
    Init,
    /// The backbone's dropout masks.
    Dropout,
    /// The order of the source training batches (the run seed itself).
    SourceOrder,
    /// The order of the target training batches.
    TargetOrder,
    /// Augmentation of source training batches.
    SourceAugment,
    /// Augmentation of target training batches.
    TargetAugment,
    /// The source domain's data: its training-size cap and class fractions (the run seed itself).
    SourceData,
    /// The target domain's data, likewise.
    TargetData,
    /// Within one domain's data: the seeded training-size cap.
    TrainCap,
    /// Within one domain's data: which samples of each class a class fraction keeps.
    ClassFractions,
    /// Within one folder domain: the train/test split of a folder without `train/` and `test/`.
    FolderSplit,
    /// Initialisation of an adversarial strategy's domain discriminator.
    Discriminator,
    /// CDAN's fixed random matrices of the randomized multilinear map.
    RandomMap,
    /// MCD's second classifier.
    SecondHead,
    /// Self-ensembling: the augmentation of the student's copy of each target image.
    StudentAugment,
    /// Self-ensembling: the augmentation of the teacher's copy.
    TeacherAugment,
    /// Instance weighting: the subset of target images an estimate reads.
    WeightSubset,
    /// Instance weighting: the estimate made before epoch `epoch` (0-based) when the weights are
    /// re-estimated during training; epoch 0 is the weighter's own seed.
    Reestimate {
        /// The 0-based epoch whose weights are estimated.
        epoch: usize,
    },
    /// Importance-weighted validation: the subset of target images it reads.
    ValidationSubset,
    /// The median heuristic's sample of pairs.
    MedianSample,
    /// KMM's subsampling of the source and target samples.
    Kmm,
    /// KLIEP's choice of kernel centres and its validation folds.
    Kliep,
    /// TrAdaBoost: which labelled target samples it may use.
    LabelledTarget,
    /// Yosinski et al.'s sweep: the split of the classes into tasks A and B.
    ClassSplit,
    /// Yosinski et al.'s sweep: the split of the training images between tasks A and B.
    TaskImages,
    /// Yosinski et al.'s sweep: the seed of network B's training (baseB and its copies).
    NetworkB,
    /// Yosinski et al.'s sweep: the random frozen layers of the RnB control.
    RandomLayers,
}

impl Stream {
    /// The seed of this stream for the run seed `run`.
    pub const fn seed(self, run: u64) -> u64 {
        match self {
            Stream::Init | Stream::SourceOrder | Stream::SourceData => run,
            Stream::Dropout => run.wrapping_add(0x0d50_0d50),
            Stream::TargetOrder => run ^ 0x007a_59e7,
            Stream::SourceAugment => run ^ 0x0a09_3e17,
            Stream::TargetAugment => run ^ 0x7a09_3e17,
            Stream::TargetData => run.wrapping_add(1),
            Stream::TrainCap => run ^ 0x5ab5_e7d0,
            Stream::ClassFractions => run ^ 0xc1a5_5f4a,
            Stream::FolderSplit => run ^ 0x00f0_1de7,
            Stream::Discriminator => run ^ 0xd15c_0000,
            Stream::RandomMap => run ^ 0xca4d_0000,
            Stream::SecondHead => run ^ 0x0f2f_0000,
            Stream::StudentAugment => run ^ 0x57de_0000,
            Stream::TeacherAugment => run ^ 0x7eac_0000,
            Stream::WeightSubset => run ^ 0x1a7e,
            Stream::Reestimate { epoch } => run.wrapping_add(epoch as u64),
            Stream::ValidationSubset => run ^ 0x1c7c,
            Stream::MedianSample => run ^ 0x3ed1,
            Stream::Kmm => run ^ 0x4ff,
            Stream::Kliep => run ^ 0x0c11e9,
            Stream::LabelledTarget => run ^ 0x7ada,
            Stream::ClassSplit => run ^ 0x5917,
            Stream::TaskImages => run ^ 0xb7a1,
            Stream::NetworkB => run.wrapping_add(1000),
            Stream::RandomLayers => run.wrapping_add(2000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Stream;

    /// The purposes a run draws from at once must not share a generator.
    #[test]
    fn the_streams_of_one_run_differ() {
        let run = 42;
        let streams = [
            Stream::Dropout,
            Stream::SourceOrder,
            Stream::TargetOrder,
            Stream::SourceAugment,
            Stream::TargetAugment,
            Stream::TargetData,
            Stream::Discriminator,
            Stream::RandomMap,
            Stream::SecondHead,
            Stream::StudentAugment,
            Stream::TeacherAugment,
            Stream::WeightSubset,
            Stream::ValidationSubset,
            Stream::LabelledTarget,
        ];
        let seeds: std::collections::BTreeSet<u64> = streams.iter().map(|s| s.seed(run)).collect();
        assert_eq!(seeds.len(), streams.len());
    }
}
