"""Where a recipe's run differs from the original code on purpose: one named entry per difference.

Each entry says what we do, what the original does (with its file:line), the expected effect, and the recipe key
that switches it (None when it cannot be switched). `--faithful` applies every switchable entry's `faithful` value,
so a run does what the original code did, quirks included; the README's "Where we differ" table is generated from
the same entries (`repro differences --markdown`). Torch-free: only names and dotted keys live here.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

FT = "VITA-Group/FreeTickets"
ST = "luuyin/Sup-tickets"
EB = "GATECH-EIC/Early-Bird-Tickets"
RP = "VITA-Group/Random_Pruning"
MC = "timgaripov/dnn-mode-connectivity"

ALL = ("*",)
FREETICKETS_CIFAR = ("freetickets_*_cifar10", "freetickets_*_cifar100", "demo_digits", "demo_sparse_digits")
SUPTICKETS_TABLES = ("suptickets_table1_*", "suptickets_table2_*", "suptickets_table9_*")  # CIFAR-10 and -100 sweeps
SUPTICKETS_CIFAR = ("suptickets_*_cifar10", "suptickets_*_cifar100") + SUPTICKETS_TABLES
RANDOM_CIFAR = ("randompruning_*_cifar10", "randompruning_*_cifar100")
SPARSE_CIFAR = FREETICKETS_CIFAR + SUPTICKETS_CIFAR + RANDOM_CIFAR


@dataclass(frozen=True)
class Difference:
    """One deliberate difference between our run and the original code.

    `key` is a dotted recipe key: `run.precision`, `analysis.ece_binning`, `stage.NAME.params.weights` (one stage),
    `stage.*.sparse.draw` (every stage with a sparse method), `stage.*.keep` (every stage).
    """

    id: str
    ours: str
    original: str
    source: str
    effect: str
    key: str | None = None
    faithful: Any = None
    recipes: tuple[str, ...] = ALL  # fnmatch patterns of the recipe names it applies to
    exclude: tuple[str, ...] = ()

    def applies(self, recipe: str) -> bool:
        """Whether this entry concerns the recipe of that name."""
        return any(fnmatch.fnmatchcase(recipe, p) for p in self.recipes) and not any(
            fnmatch.fnmatchcase(recipe, p) for p in self.exclude)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form `repro differences --json` prints."""
        return {"id": self.id, "ours": self.ours, "original": self.original, "source": self.source,
                "effect": self.effect, "key": self.key, "faithful": self.faithful}


DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        id="bf16_autocast",
        ours="bf16 autocast and channels_last on CUDA (`run.precision = \"auto\"`; fp32 on the CPU)",
        original="fp32 throughout (`--fp16` exists but no README command passes it; the mode-connectivity and "
                 "Early-Bird CIFAR code has no mixed precision)",
        source=f"{FT} main_DST.py:168, main_individual.py:169; {ST} CIFAR/main_suptickets.py:295; "
               f"{RP} CIFAR/main.py:157; {EB} main.py:254; {MC} utils.py:43",
        effect="accuracy within run-to-run noise (a few 0.1%); about 2-3x faster on an H100",
        key="run.precision", faithful="fp32", exclude=("*_imagenet",)),
    Difference(
        id="pruned_momentum_zeroed",
        ours="the momentum of pruned weights is zeroed with the mask, so a regrown weight starts at rest (momentum "
             "growth scores an unmasked copy, as the original's buffer)",
        original="momentum buffers are never masked (the masking lines are commented out): a regrown weight starts at "
                 "0 with the momentum of its dense gradients",
        source=f"{FT} sparselearning/core.py:376-382",
        effect="not measured; regrown weights start from rest instead of already moving",
        key="stage.*.sparse.mask_momentum", faithful=False,
        recipes=("freetickets_dst_*_cifar*", "freetickets_edst_*_cifar*", "demo_digits")),
    Difference(
        id="exact_mask_counts",
        ours="each layer holds exactly round(d*N) active weights (top-k of random scores)",
        original="i.i.d. Bernoulli(d) per weight, so layer densities hold only on average",
        source=f"{FT} sparselearning/core.py:257; {ST} CIFAR/sparselearning/core.py:320; "
               f"{RP} CIFAR/sparselearning/core.py:262",
        effect="negligible at CIFAR sizes: a layer is off by about sqrt(N d (1-d)) weights (about 670 of 3.69M)",
        key="stage.*.sparse.draw", faithful="bernoulli",
        recipes=SPARSE_CIFAR + ("freetickets_*_imagenet", "suptickets_*_imagenet", "randompruning_*_imagenet"),
        exclude=("freetickets_pf_*",)),
    Difference(
        id="full_layers_skipped",
        ours="topology updates leave layers at density 1.0 (ERK-dense) alone",
        original="each update and each EDST jump prunes those layers too, then regrows them whole: their smallest "
                 "50% (80% at jumps) restart at zero",
        source=f"{FT} sparselearning/core.py:404, 479-488, 616-618",
        effect="not measured; it touches the stem, the first block conv, the shortcuts and fc (0.8% of WRN-28-10's "
               "maskable weights at d = 0.2)",
        key="stage.*.sparse.update_full_layers", faithful=True,
        recipes=("freetickets_dst_*_cifar*", "freetickets_edst_*_cifar*", "demo_digits")),
    Difference(
        id="tsne_protocol",
        ours="t-SNE with random_state 0; runs shorter than 250 epochs scale the original's cut (epoch 145 of 250) to "
             "ceil(145 E / 250), or take the last 3 epochs; any number of trajectories "
             "(`analysis.tsne_protocol = \"ours\"`: softmax of 500 images every epoch, PCA init)",
        original="log-softmax of the first test batch (128 images) from every second checkpoint from index 145, "
                 "TSNE(n_components=2) with sklearn 0.24 defaults, unseeded; exactly 3 trajectories",
        source=f"{FT} ensemble_freetickets.py:93-113, 765-767, 790-796",
        effect="qualitative only: no number depends on the embedding",
        key="analysis.tsne_protocol", faithful="original",
        recipes=("freetickets_*", "demo_digits")),
    Difference(
        id="held_out_unaugmented",
        ours="the held-out validation split is scored without augmentation (the same numbers at every evaluation)",
        original="the validation split is cut from the training dataset object, so it is scored through the training "
                 "transform (random crop and flip, fresh each evaluation)",
        source=f"{FT} sparselearning/utils.py:111, 127-129; {ST} CIFAR/sparselearning/utils.py:49, 66-67; "
               f"{RP} CIFAR/sparselearning/utils.py:77, 94-95",
        effect="validation accuracy a little lower and noisier in the original; best-validation checkpoints (EDST "
               "tickets, PF members) can be picked at other epochs",
        key="data.val_augment", faithful=True,
        recipes=("freetickets_*_cifar10", "freetickets_*_cifar100", "suptickets_*_cifar10", "randompruning_*_cifar10")
        + SUPTICKETS_TABLES),
    Difference(
        id="members_final_weights",
        ours="each DST member (and the individual model) is its stage's final weights",
        original="main_DST.py saves model.pth only when validation accuracy improves (the member is its "
                 "best-validation checkpoint); main_individual.py saves only when test accuracy improves",
        source=f"{FT} main_DST.py:301-311, main_individual.py:304-310",
        effect="member accuracy within about 0.1-0.2%; best-on-test selection inflates the individual model's test "
               "accuracy by roughly 0.1-0.3% (faithful selects on the held-out 5,000, not on test)",
        key="stage.*.keep", faithful="best",
        recipes=("freetickets_dst_*", "freetickets_individual_*")),
    Difference(
        id="ece_14_bins",
        ours="ECE over 15 equal-width bins of width 1/15",
        original="bin edges np.linspace(0, 1, 15) with np.digitize(right=True): 14 bins of width 1/14 (plus one that "
                 "only catches a confidence of exactly 0)",
        source=f"{FT} ensemble_freetickets.py:165-179",
        effect="ECE differs by a few thousandths (absolute); the reliability diagram has 14 bars",
        key="analysis.ece_binning", faithful="original",
        recipes=("freetickets_*", "suptickets_*", "demo_digits")),
    Difference(
        id="prob_clamp",
        ours="probabilities are clamped at 1e-12 inside every logarithm (NLL, KL from the stored softmax)",
        original="NLL takes log() of the softmax unclamped (an underflowed true-class probability gives inf); KL is "
                 "exact in log space (F.kl_div of log_softmax outputs)",
        source=f"{FT} ensemble_freetickets.py:158, 193, 323-336",
        effect="none for ordinary points; a term below 1e-12 is capped at 27.6 nats, so ours stays finite where the "
               "original is inf",
        recipes=("freetickets_*", "demo_digits")),
    Difference(
        id="suptickets_set_random_growth",
        ours="Sup-tickets' SET grows at random, as the paper describes (and so does its re-exploration)",
        original="the CIFAR code stores --growth but truncate_weights always calls gradient_growth, so its SET is RigL",
        source=f"{ST} CIFAR/sparselearning/core.py:67, 569, 633-638",
        effect="the original's SET numbers are RigL's; random growth is usually a few tenths of a point lower at 95% "
               "sparsity",
        key="stage.*.sparse.growth", faithful="gradient",
        recipes=("suptickets_set_*",) + SUPTICKETS_TABLES),
    Difference(
        id="suptickets_cifar10_test_set",
        ours="CIFAR-10 accuracies (each epoch's test_acc, the superposed network's) are measured on the 10,000 test "
             "images",
        original="main_suptickets.py never uses its test loader: it scores the last 5,000 training images "
                 "(--valid_split 0.1) and prints that validation accuracy, also for the superposed network",
        source=f"{ST} CIFAR/main_suptickets.py:382, 494-495, 561-562, 627-628",
        effect="the paper's CIFAR-10 numbers are validation accuracies on held-out training images; test accuracy "
               "is usually within a few tenths of it (CIFAR-100's validation set is its test set: no difference)",
        recipes=("suptickets_*_cifar10",) + SUPTICKETS_TABLES),
    Difference(
        id="suptickets_cifar_snip",
        ours="the CIFAR SNIP rows start from SNIP's own masks (`init = \"snip_masks\"`: the top int(N d) |g w| of all "
             "conv and linear weights on one training batch, scored on a Xavier-re-initialised copy as "
             "ImageNet/snip.py) and keep them fixed",
        original="the CIFAR code has no SNIP: Masking.init knows ERK, uniform and the prune_* modes, and any other "
                 "--sparse-init leaves all-ones masks (dense training); SNIP exists only in the ImageNet code",
        source=f"{ST} CIFAR/sparselearning/core.py:110-325, 494; ImageNet/snip.py:64-118",
        effect="the paper's CIFAR SNIP rows cannot come from the released code; ours is the ImageNet code's SNIP",
        recipes=("suptickets_table2_*",)),
    Difference(
        id="suptickets_imagenet_snip_live_model",
        ours="SNIP scores a copy of the network with cross-entropy; the trained network keeps its own (kaiming "
             "fan-in) weights and every weight trains",
        original="snip.py re-initialises the live model's conv and linear weights (xavier_normal), sets their "
                 "requires_grad to False and patches forward to weight * weight_mask (a parameter outside the "
                 "optimizer), so those weights never train; it scores nll_loss of the logits",
        source=f"{ST} ImageNet/snip.py:74-96; ImageNet/core.py:202-210",
        effect="the original's SNIP run trains only BatchNorm and biases, so the paper's SNIP row cannot come from "
               "it; ours trains the SNIP-masked network",
        recipes=("suptickets_table3_*",)),
    Difference(
        id="suptickets_imagenet_swap_superposed",
        ours="training keeps its own trajectory; the superposed network is a side accumulator (as the CIFAR script)",
        original="ImageNet main.py swaps the superposed network in after each superposition without rebinding the "
                 "optimizer or the masks: from cycle 2 on the weights in use never change, only their BN statistics "
                 "drift, and later tickets add nothing",
        source=f"{ST} ImageNet/main.py:260, 290-291, 791, 805; ImageNet/core.py:378-380",
        effect="the original's result is about the pruned mean of the pre-trained model and ticket 1; expect a few "
               "tenths of a point lower top-1 than our average of every ticket",
        key="stage.suptickets.params.swap_superposed", faithful=True,
        recipes=("suptickets_*_imagenet",)),
    Difference(
        id="eb_retrain_inherits_weights",
        ours="EB Train (continue) fine-tunes the pruned ticket from its EB weights, the paper's scheme",
        original="main_c.py builds a fresh network of the pruned shape and copies only the channel selection, so it "
                 "trains from a random initialisation (main_resnet50.py too)",
        source=f"{EB} main_c.py:141-152, main_resnet50.py:184-190",
        effect="usually a few tenths of a point; the paper's EB Train numbers assume inherited weights",
        key="stage.retrain.params.weights", faithful="reinit",
        recipes=("earlybird_vgg16_*", "earlybird_preresnet101_*", "earlybird_resnet18_imagenet",
                 "earlybird_resnet50_imagenet", "earlybird_table2_*", "earlybird_table3_*"),
        exclude=("earlybird_table2_vgg16_lowprec_*",)),  # main_c_lp.py does load the pruned weights
    Difference(
        id="eb_test_acc_batch_mean",
        ours="test accuracy is correct images over all images",
        original="test() averages each batch's accuracy over len(test_loader), so the short last batch (16 of 10,000 "
                 "images) weighs as much as a full one; the result is rounded to 2 decimals",
        source=f"{EB} main.py:286-304, main_c.py:233-251, main_scratch.py:201-219",
        effect="about 0.1% either way on CIFAR; negligible on ImageNet (the 2-decimal rounding is not reproduced)",
        key="data.eval_accuracy", faithful="batch_mean",
        recipes=("earlybird_*",)),
    Difference(
        id="eb_ll_expect_on_lowprec_final",
        ours="the LL row's [expect] is compared with the final 8-bit model's accuracy (the SWALP average is recorded "
             "beside it as swa_test_acc)",
        original="main_c_lp.py prints the best 8-bit accuracy over epochs and the SWALP average; nothing says which "
                 "one the paper's table holds",
        source=f"{EB} main_c_lp.py:404-413, 421-426, 436-440",
        effect="the SWALP average is typically a few tenths above the final 8-bit weights",
        recipes=("earlybird_lowprec_*", "earlybird_table2_vgg16_lowprec_*")),
    Difference(
        id="jpeg_dct_downscale",
        ours="JPEGs are decoded by libjpeg-turbo (simplejpeg) at the smallest of 1/8, 1/4, 1/2 or full size that "
             "keeps the crop at least image_size pixels each way (evaluation: the shorter side at least resize), and "
             "the crop is resized from there with antialiased bilinear (`data.decoder = \"turbo\"`); the box is drawn "
             "in full-size pixels with the same draws, so crop geometry is identical; other files go to Pillow",
        original="torchvision ImageFolder's default loader: Pillow decodes every image at full size, then "
                 "RandomResizedCrop(224) or Resize(256) + CenterCrop(224)",
        source=f"{FT} ImageNet/main.py:464, 488; {ST} ImageNet/main.py:865, 889; {RP} ImageNet/main.py:451, 475; "
               f"{EB} main.py:150, 164, main_resnet50.py:154, 168",
        effect="pixels differ by resampling only (crops of 448+ px, decoded at 1/2 or 1/4 scale: 0.2-0.5 levels of 255 "
               "on average on smooth images); crops decoded at full size are the same pixels; decoding is faster",
        key="data.decoder", faithful="pillow",
        recipes=("*_imagenet",)),
    Difference(
        id="curve_eval_train_loader",
        ours="the BN pass and the 'train' numbers along a curve or plane use the training split augmented as in "
             "training (the default, as the original), with fixed draws seeded by run.seed, the same at every point",
        original="the training loader with its transform (random crop and flip), unshuffled; a fresh unseeded draw "
                 "at every pass",
        source=f"{MC} eval_curve.py:53-61, 103-104; plane.py:63-71, 155-157",
        effect="the same up to which crops are drawn (ours is reproducible); `\"plain\"` gives lower train loss, not "
               "comparable with the README's curve train losses",
        key="analysis.curve_train_data", faithful="augmented",
        recipes=("curve_*", "demo_curve_digits")),
    Difference(
        id="vgg_bn_forward",
        ours="vgg16bn / vgg19bn run conv-BN-ReLU for every conv (13 / 16 convs)",
        original="forward zips the conv/BN list with the ReLU list, so VGG16BN runs 8 of its 13 convs and 5 of 13 BNs",
        source=f"{MC} models/vgg.py:36-41, 71-75",
        effect="ours is the intended, deeper network; no README command uses the BN variants",
        recipes=("curve_*", "fge_*", "demo_curve_digits")),
    Difference(
        id="readme_learning_rates",
        ours="the README's learning rates (train.py --lr 0.05 VGG16 / 0.1 PreResNet, WRN; curves 0.015 / 0.03; "
             "fge.py lr_1/lr_2 as each README line)",
        original="the scripts' own defaults: train.py --lr 0.01; fge.py --lr_1 0.05 --lr_2 1e-4",
        source=f"{MC} README.md:78-82, 235-244; train.py:57-58; fge.py:42-45",
        effect="none against the README tables, which were made with the README commands",
        recipes=("curve_*", "fge_*")),
    Difference(
        id="plane_loss_regularizer",
        ours="the plane's loss is NLL + 0.5 wd ||p||^2 (the curve-training objective)",
        original="utils.l2_regularizer sums unsquared norms: 0.5 wd sum ||p||_2",
        source=f"{MC} utils.py:9-15, plane.py:89, 157-158",
        effect="/plane train_loss and test_loss only; NLL and error are unchanged",
        recipes=("curve_*",)),
    Difference(
        id="plane_any_num_bends",
        ours="the plane is spanned by the first, the middle and the last bend",
        original="hard-wired bends 0, 1, 2 (the third taken as the end point)",
        source=f"{MC} plane.py:96-110",
        effect="none for 3 bends (every recipe); for other counts the original's plane is wrong",
        recipes=("curve_*",)),
    Difference(
        id="pf_prunes_the_final_dense_model",
        ours="PF prunes each dense model's final weights (init_from a stage loads its final.pt)",
        original="PF prunes the --pretrained checkpoint that main_individual.py saved, its best-on-test epoch",
        source=f"{FT} main_individual.py:304-310, main_PF.py:313-325",
        effect="the dense starting points differ by the last epochs' noise (a few 0.1% on test); the fine-tune's own "
               "best-validation member is kept as the original (`keep = \"best\"`)",
        recipes=("freetickets_pf_*",)),
    Difference(
        id="masks_drawn_from_the_run_seed",
        ours="a sparse stage draws its initial masks from its own stream, run.seed * 7919 + its index in the recipe; "
             "its own `seed` sets its weights' init and data order, not its masks",
        original="main_DST.py seeds torch with --seed before Masking draws the masks, so each independent run's masks "
                 "follow its --seed (17, 18, 19)",
        source=f"{FT} main_DST.py:202, 284-286",
        effect="none in distribution: the members' masks still differ (one stream per stage) and no draw matches the "
               "original's bit for bit in any case; changing one member's `seed` does not redraw its masks",
        recipes=("freetickets_dst_*",)),
    Difference(
        id="logits_not_log_softmax",
        ours="models return logits and train with cross-entropy",
        original="models return log_softmax and train with NLL",
        source=f"{FT} sparselearning/models.py:515, main_DST.py:96",
        effect="none: the same loss and the same probabilities",
        recipes=FREETICKETS_CIFAR + SUPTICKETS_CIFAR + RANDOM_CIFAR),
    Difference(
        id="disagreement_offset",
        ours="disagreement is the plain fraction of test points whose argmax differs",
        original="the plotted/printed disagreement adds 0.001 to every non-zero entry",
        source=f"{FT} ensemble_freetickets.py:647",
        effect="ours is 0.001 (0.1 percentage point) lower on every off-diagonal entry",
        recipes=("freetickets_*", "demo_digits")),
    Difference(
        id="kd_all_pairs",
        ours="KL divergence averaged over all ordered pairs of all M members",
        original="KL over the ordered pairs of the first three members only (hard-coded indices 0, 1, 2)",
        source=f"{FT} ensemble_freetickets.py:746-751",
        effect="identical for M = 3 (every FreeTickets recipe); defined for any M",
        recipes=("freetickets_*", "demo_digits")),
    Difference(
        id="member_nll_full_test_set",
        ours="each member's NLL is the mean over the whole test set",
        original="the 'NLL loss' printed per member is the last test batch's mean (16 of 10,000 images)",
        source=f"{FT} ensemble_freetickets.py:193",
        effect="ours is the quantity the paper means; the original's is noise around it",
        recipes=("freetickets_*", "demo_digits")),
    Difference(
        id="grasp_num_classes",
        ours="GraSP scores use the data set's class count",
        original="GraSP hard-codes 10 classes and fails on CIFAR-100",
        source=f"{RP} CIFAR/sparselearning/snip.py:177, core.py:112",
        effect="none on CIFAR-10; the original cannot run CIFAR-100 GraSP at all",
        recipes=("randompruning_*",)),
    Difference(
        id="ensemble_in_one_run",
        ours="the M runs of a DST ensemble are repeated stages of one run directory",
        original="M separate training commands with different seeds, combined by ensemble_freetickets.py",
        source=f"{FT} README.md (DST commands), ensemble_freetickets.py:525",
        effect="none on numbers; the ensemble and its analyses live in one analysis.h5",
        recipes=("freetickets_dst_*", "freetickets_pf_*")),
    Difference(
        id="edst_best_per_phase",
        ours="each EDST refinement phase picks its own best-validation ticket",
        original="the exploration phase's best accuracy is carried into phase 1, so ticket 1 is saved only once "
                 "validation accuracy beats the exploration best",
        source=f"{FT} main_EDST.py:286, 303-318",
        effect="usually none (phase 1 soon beats the exploration best); ticket 1 may come from an earlier epoch",
        recipes=("freetickets_edst_*", "demo_digits")),
)


def differences_for(recipe: str) -> list[Difference]:
    """The entries that apply to a recipe (by its name)."""
    return [d for d in DIFFERENCES if d.applies(recipe)]


def by_id(ident: str) -> Difference:
    """One entry by its id (KeyError when there is none)."""
    for d in DIFFERENCES:
        if d.id == ident:
            return d
    raise KeyError(ident)


def apply_faithful(raw: dict[str, Any], recipe: str, sparse_methods: set[str]) -> list[str]:
    """Set every switchable entry's faithful value in a raw recipe (before --smoke and --set, which win); returns
    the ids applied. `sparse_methods` names the methods whose stages take a `sparse` table."""
    applied = []
    for d in differences_for(recipe):
        if d.key is None:
            continue
        if _set_key(raw, d.key, d.faithful, sparse_methods):
            applied.append(d.id)
    return applied


def _set_key(raw: dict[str, Any], key: str, value: Any, sparse_methods: set[str]) -> bool:
    """Set one dotted key; `stage.*.` means every stage it concerns. False when the recipe has no such place."""
    segs = key.split(".")
    if segs[0] != "stage":
        node = raw
        for seg in segs[:-1]:
            node = node.setdefault(seg, {})
            if not isinstance(node, dict):
                return False
        node[segs[-1]] = value
        return True
    stages = raw.get("stage")
    if not isinstance(stages, list):
        return False
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    which, rest = segs[1], segs[2:]
    done = False
    for st in stages:
        if not isinstance(st, dict):
            continue
        if which != "*" and st.get("name") != which:
            continue
        if rest[0] == "sparse" and st.get("method", train.get("method")) not in sparse_methods:
            continue
        node = st
        for seg in rest[:-1]:
            node = node.setdefault(seg, {})
        node[rest[-1]] = value
        done = True
    if done and which == "*" and isinstance(train.get(rest[0]), dict):  # the defaults say the same, not the opposite
        node = train
        for seg in rest[:-1]:
            node = node.setdefault(seg, {})
        node[rest[-1]] = value
    return done


def markdown_table() -> str:
    """The README's "Where we differ" table: every entry, its source and its switch."""
    lines = ["| id | ours | the original | source | effect | switch (`--faithful` sets) |",
             "|---|---|---|---|---|---|"]
    for d in DIFFERENCES:
        switch = "not switchable" if d.key is None else f"`{d.key} = {toml_value(d.faithful)}`"
        cells = [f"`{d.id}`", d.ours, d.original, d.source, d.effect, switch]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A value as TOML writes it (for the README table and `repro show --faithful`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
