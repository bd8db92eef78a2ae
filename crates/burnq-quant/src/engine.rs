//! The fast engine: an [`Engine`] packs a [`QuantModel`] once for the chosen
//! [`KernelChoice`] and runs the network with the fast [`kernels`](crate::kernels),
//! reproducing [`QuantModel::forward_reference`] bit for bit.
//!
//! Per image: conv1 (GEMM, then ReLU-requantization and max-pool in one pass), conv2 (the
//! same); per batch of up to 48 images: fc1 (GEMM with the requantization in its epilogue) and
//! fc2 (accumulators, then `u8` logits and argmax). All scratch lives in a [`Workspace`],
//! which grows on first use only, so steady-state inference with
//! [`Engine::forward_into`] allocates nothing. [`Engine::forward_parallel`] splits a batch
//! over threads, one workspace each.

use std::thread;

use crate::kernels::{
    Im2col, Isa, KernelChoice, LinearOut, PackedLayer, Scratch, conv_pool_image, grow, linear_rows,
    with_isa,
};
use crate::model::{POOL1_SIDE, check_images};
use crate::{IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES, Output, QuantError, QuantModel, QuantParams};

/// Images per batch of the fully connected layers, whose input rows are packed together and
/// share every weight panel: eight 6-row tiles.
const BATCH: usize = 48;

/// A [`QuantModel`] packed for one kernel implementation. Immutable and `Sync`: threads can
/// share one engine, each with its own [`Workspace`].
#[derive(Debug, Clone)]
pub struct Engine {
    kernel: KernelChoice,
    input: QuantParams,
    layers: [PackedLayer; 4],
    conv1_plan: Im2col,
    conv2_plan: Im2col,
}

/// Reusable scratch for [`Engine::forward_into`]: its buffers grow to the sizes a forward pass
/// needs on first use and are reused afterwards. Any workspace fits any engine.
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    /// The layer drivers' scratch (im2col panels, packed rows).
    scratch: Scratch,
    /// One image's convolution accumulators.
    acc: Vec<i32>,
    /// Vertical maxima of one channel's accumulators.
    rows: Vec<i32>,
    /// One image's pooled conv1 output, conv2's input.
    pool1: Vec<u8>,
    /// The batch's pooled conv2 outputs, fc1's input rows.
    features: Vec<u8>,
    /// The batch's fc1 outputs, fc2's input rows.
    hidden: Vec<u8>,
}

impl Workspace {
    /// An empty workspace; the first forward pass sizes it.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Empties `v` and refills it with `len` default values, in place.
fn refill<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    v.clear();
    v.resize(len, T::default());
}

/// One thread's contiguous share of a batch: its images and its slices of the outputs.
#[derive(Debug)]
pub(crate) struct Share<'a> {
    pub(crate) images: &'a [u8],
    pub(crate) acc: &'a mut [i32],
    pub(crate) logits: &'a mut [u8],
    pub(crate) predictions: &'a mut [u8],
}

/// Splits the `images` (`image_len` codes each) of a checked batch into contiguous shares,
/// one per thread (`threads` = 0: one per available core), and runs `run` on each in its own
/// scoped thread, writing into `out` (sized for the batch, `classes` logits per image).
pub(crate) fn split_batch(
    images: &[u8],
    image_len: usize,
    classes: usize,
    threads: usize,
    out: &mut Output,
    run: impl Fn(Share<'_>) -> Result<(), QuantError> + Sync,
) -> Result<(), QuantError> {
    let n = out.predictions.len();
    if n == 0 {
        return Ok(());
    }
    let threads = match threads {
        0 => thread::available_parallelism().map_or(1, |t| t.get()),
        t => t,
    };
    let share = n.div_ceil(threads.min(n));
    let shares = images
        .chunks(share * image_len)
        .zip(out.fc2_acc.chunks_mut(share * classes))
        .zip(out.logits_u8.chunks_mut(share * classes))
        .zip(out.predictions.chunks_mut(share));
    let run = &run;
    thread::scope(|scope| {
        let workers: Vec<_> = shares
            .map(|(((images, acc), logits), predictions)| {
                scope.spawn(move || {
                    run(Share {
                        images,
                        acc,
                        logits,
                        predictions,
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("an engine thread panicked"))
    })
}

impl Engine {
    /// Packs `model` for [`KernelChoice::selected`]: the fastest kernel this CPU runs, unless
    /// `BURNQ_KERNEL` names another.
    pub fn new(model: &QuantModel) -> Result<Self, QuantError> {
        Self::with_kernel(model, KernelChoice::selected()?)
    }

    /// Packs `model` for `kernel`; an error if this CPU cannot run it, or if a layer is beyond
    /// the fast kernels (see [`PackedLayer::new`]; validated models never are).
    pub fn with_kernel(model: &QuantModel, kernel: KernelChoice) -> Result<Self, QuantError> {
        kernel.check_available()?;
        let [conv1, conv2, fc1, fc2] = model.layers();
        let layers = [
            PackedLayer::new(conv1)?,
            PackedLayer::new(conv2)?,
            PackedLayer::new(fc1)?,
            PackedLayer::new(fc2)?,
        ];
        let conv1_plan = layers[0].conv_plan(IMAGE_SIDE, IMAGE_SIDE)?;
        let conv2_plan = layers[1].conv_plan(POOL1_SIDE, POOL1_SIDE)?;
        Ok(Self {
            kernel,
            input: model.input_params(),
            layers,
            conv1_plan,
            conv2_plan,
        })
    }

    /// The kernel implementation this engine runs.
    pub fn kernel(&self) -> KernelChoice {
        self.kernel
    }

    /// Runs `n` images of 28×28 codes (`n·784` bytes, as for
    /// [`QuantModel::forward_reference`], whose result this equals exactly).
    pub fn forward(
        &self,
        workspace: &mut Workspace,
        images: &[u8],
        n: usize,
    ) -> Result<Output, QuantError> {
        let mut out = Output {
            fc2_acc: Vec::new(),
            logits_u8: Vec::new(),
            predictions: Vec::new(),
        };
        self.forward_into(workspace, images, n, &mut out)?;
        Ok(out)
    }

    /// [`Engine::forward`] into `out`, whose vectors are resized in place: with a warm
    /// `workspace` and `out` of enough capacity, nothing is allocated.
    pub fn forward_into(
        &self,
        workspace: &mut Workspace,
        images: &[u8],
        n: usize,
        out: &mut Output,
    ) -> Result<(), QuantError> {
        check_images(self.input, images, n)?;
        refill(&mut out.fc2_acc, n * NUM_CLASSES);
        refill(&mut out.logits_u8, n * NUM_CLASSES);
        refill(&mut out.predictions, n);
        self.run(
            workspace,
            images,
            &mut out.fc2_acc,
            &mut out.logits_u8,
            &mut out.predictions,
        )
    }

    /// [`Engine::forward`] split over `threads` threads (0: one per available core), each
    /// running a contiguous share of the images with its own [`Workspace`].
    pub fn forward_parallel(
        &self,
        images: &[u8],
        n: usize,
        threads: usize,
    ) -> Result<Output, QuantError> {
        check_images(self.input, images, n)?;
        let mut out = Output {
            fc2_acc: vec![0; n * NUM_CLASSES],
            logits_u8: vec![0; n * NUM_CLASSES],
            predictions: vec![0; n],
        };
        split_batch(
            images,
            IMAGE_PIXELS,
            NUM_CLASSES,
            threads,
            &mut out,
            |share| {
                self.run(
                    &mut Workspace::new(),
                    share.images,
                    share.acc,
                    share.logits,
                    share.predictions,
                )
            },
        )?;
        Ok(out)
    }

    /// The forward pass on checked images, into output slices of matching lengths.
    fn run(
        &self,
        workspace: &mut Workspace,
        images: &[u8],
        fc2_acc: &mut [i32],
        logits: &mut [u8],
        predictions: &mut [u8],
    ) -> Result<(), QuantError> {
        with_isa!(self.kernel, |isa| self.run_with(
            isa,
            workspace,
            images,
            fc2_acc,
            logits,
            predictions
        ));
        Ok(())
    }

    fn run_with<K: Isa>(
        &self,
        isa: K,
        workspace: &mut Workspace,
        images: &[u8],
        fc2_acc: &mut [i32],
        logits: &mut [u8],
        predictions: &mut [u8],
    ) {
        let [conv1, conv2, fc1, fc2] = &self.layers;
        let (plan1, plan2) = (&self.conv1_plan, &self.conv2_plan);
        let Workspace {
            scratch,
            acc,
            rows,
            pool1,
            features,
            hidden,
        } = workspace;
        let acc = grow(
            acc,
            (conv1.out_channels() * plan1.positions())
                .max(conv2.out_channels() * plan2.positions()),
        );
        let rows = grow(rows, plan1.positions().max(plan2.positions()) / 2);
        let pool1 = grow(pool1, plan2.image_len);
        let (width1, width2) = (fc1.fan_in(), fc2.fan_in());
        let batches = images
            .chunks(BATCH * IMAGE_PIXELS)
            .zip(fc2_acc.chunks_mut(BATCH * NUM_CLASSES))
            .zip(logits.chunks_mut(BATCH * NUM_CLASSES))
            .zip(predictions.chunks_mut(BATCH));
        for (((images, fc2_acc), logits), predictions) in batches {
            let n = predictions.len();
            let features = grow(features, n * width1);
            let hidden = grow(hidden, n * width2);
            let rows_in = images
                .chunks_exact(IMAGE_PIXELS)
                .zip(features.chunks_exact_mut(width1));
            for (image, pooled) in rows_in {
                conv_pool_image(
                    isa,
                    conv1,
                    plan1,
                    plan1.out_w,
                    image,
                    scratch,
                    acc,
                    rows,
                    pool1,
                );
                conv_pool_image(
                    isa,
                    conv2,
                    plan2,
                    plan2.out_w,
                    pool1,
                    scratch,
                    acc,
                    rows,
                    pooled,
                );
            }
            linear_rows(isa, fc1, features, n, scratch, LinearOut::Requant(hidden));
            linear_rows(isa, fc2, hidden, n, scratch, LinearOut::Acc(fc2_acc));
            let per_image = fc2_acc
                .chunks_exact(NUM_CLASSES)
                .zip(logits.chunks_exact_mut(NUM_CLASSES))
                .zip(predictions);
            for ((acc, logits), prediction) in per_image {
                isa.requant_channels(acc, fc2.requant(), logits);
                *prediction =
                    crate::reference::predict(acc, &fc2.requant().scalar).unwrap_or_default();
            }
        }
    }
}
