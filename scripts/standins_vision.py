"""Offline stand-ins for the vision-side hub artefacts of the ``full`` profile (and SST-2).

The ``full`` profile loads real models and datasets from the Hugging Face hub and from
torchvision's servers. To rehearse it on a machine without either, :func:`build` writes small,
random-weight *stand-ins* into a folder, each exactly where the library looks for it when it is
offline, so the course's real loading code runs unchanged. Point the libraries at the folder::

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    HF_HOME=<out>/hf TORCH_HOME=<out>/torch FTLAB_CACHE=<out>/cache  python ...

Where each library looks, offline (read from the installed sources)
-------------------------------------------------------------------
* **transformers** (``from_pretrained("openai/clip-vit-base-patch32")``) asks huggingface_hub
  for each file in the *hub cache* ``$HF_HOME/hub``: ``models--<org>--<name>/refs/main`` holds
  a commit hash, and ``snapshots/<hash>/<file>`` the file. (A real download keeps the bytes in
  ``blobs/`` and symlinks them from the snapshot; a plain file in the snapshot works the same.)
* **datasets 5.2** (``load_dataset("uoft-cs/cifar10")``) never opens the hub cache when
  ``HF_HUB_OFFLINE`` is set: ``dataset_module_factory`` raises "offline" before any hub call and
  falls back to ``CachedDatasetModuleFactory``, i.e. to what an earlier online ``load_dataset``
  left in the *datasets cache* ``$HF_HOME/datasets``:
  ``<org>___<name>/<config>/<version>/<hash>/`` with ``dataset_info.json`` (features, splits)
  and one Arrow *stream* file per split, ``<name>-<split>.arrow``. That is what we write.
* **torchvision weights** (``resnet50(weights="DEFAULT")``) go through
  ``torch.hub.load_state_dict_from_url``, which loads ``$TORCH_HOME/hub/checkpoints/<file name
  of the url>`` if it exists. The hash in the file name (``resnet50-11ad3fa6.pth``) is checked
  only while *downloading*; a file already there is loaded as is, so a random one passes.
* **torchvision datasets** (``EuroSAT(root, download=True)``) skip the download when
  ``<root>/eurosat/2750`` exists, then read it as an ``ImageFolder`` (one folder per class).

What is real and what is shrunk
-------------------------------
Every config key that code or lessons read keeps its real value (vocabulary sizes, special
token ids, image and patch sizes, projection width, number of DistilBERT layers, max lengths);
widths, heads and depths shrink so a CPU forward is instant. Weights are random (seeded).

========================================  ======================  ===========================
stand-in                                   real                    stand-in
========================================  ======================  ===========================
CLIP text tower (``CLIPModel``)            512 wide, 12 layers,    64 wide, 2 layers, 2 heads,
                                           8 heads, MLP 2048       MLP 256
CLIP vision tower                          768 wide, 12 layers,    64 wide, 2 layers, 2 heads,
                                           12 heads, MLP 3072      MLP 256
CLIP kept real                             vocab 49408, 77 tokens, image 224, patch 32,
                                           projection 512, quick_gelu, eos id 2 (legacy pooling)
CLIP parameters                            151 M                   about 3.6 M
DistilBERT (``DistilBertForMaskedLM``)     dim 768, 12 heads,      dim 64, 4 heads,
                                           hidden 3072             hidden 256
DistilBERT kept real                       vocab 30522, 512 positions, 6 layers, tied embeddings
DistilBERT parameters                      66 M                    about 2.3 M
ResNet-50 (torchvision)                    25.6 M                  25.6 M: NOT shrunk (its state
                                                                   dict must load strictly)
CIFAR-10 ``uoft-cs/cifar10``               50,000 / 10,000         300 / 100 drawn 32x32 images
EuroSAT (torchvision folder)               27,000 (2,000-3,000     32 per class (320), 64x64
                                           per class)              JPEG: 16 train + 16 test per
                                                                   class, lesson 01's largest k
SST-2 ``stanfordnlp/sst2``                 67,349 / 872 / 1,821    400 / 150 / 100 generated
                                                                   sentences
========================================  ======================  ===========================

The tokenizers are not random: they really tokenize English. CLIP's is a byte-level BPE with
CLIP's layout (256 byte symbols, their 256 ``</w>`` forms, merges, then ``<|startoftext|>`` =
49406 and ``<|endoftext|>`` = 49407), merges learnt from an English word list and sentences, then
topped up with letter-pair/triple merges to the real 49,408 entries. DistilBERT's is an
uncased WordPiece with BERT's layout (``[PAD]`` 0, ``[unused*]``, ``[UNK]`` 100, ``[CLS]`` 101,
``[SEP]`` 102, ``[MASK]`` 103), English words, suffixes and letter n-grams to 30,522 entries.

Building everything takes a few seconds; most of it is ResNet-50's 100 MB file.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import string
import time
from pathlib import Path

# --------------------------------------------------------------------------------------------
# Names the libraries look for
# --------------------------------------------------------------------------------------------

CLIP_REPO = "openai/clip-vit-base-patch32"
DISTILBERT_REPO = "distilbert-base-uncased"
CIFAR10_REPO, CIFAR10_CONFIG = "uoft-cs/cifar10", "plain_text"
SST2_REPO, SST2_CONFIG = "stanfordnlp/sst2", "default"
DATASET_VERSION = "0.0.0"  # what datasets writes for a data-files-only hub repo

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EUROSAT_CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake"]

# Rows per split (and per class for EuroSAT). CIFAR-10 and SST-2 hold as many rows as lessons 01
# and 03 train on at full scale (10,000 images; 8,000 reviews after 872 are held out for
# validation), so their epochs have the real number of steps: the memory plan's minutes come out
# as on Colab, and FTLAB_MAX_STEPS still keeps the rehearsal's runs to a couple of steps.
CIFAR10_ROWS = {"train": 10_000, "test": 2_000}
# EuroSAT: ftlab.data.shapes gives half of a class under 200 images to train, and lesson 01's
# k-shot curve draws up to 16 per class from train: 2 x 16.
EUROSAT_PER_CLASS = 32
SST2_ROWS = {"train": 8_872, "validation": 872, "test": 100}

# Real sizes, recorded in the manifest next to the stand-in's.
REAL_CLIP = {"text": {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8, "num_hidden_layers": 12},
             "vision": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12},
             "parameters": 151_277_313}
SMALL_TOWER = {"hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 2, "num_hidden_layers": 2}
REAL_DISTILBERT = {"dim": 768, "hidden_dim": 3072, "n_heads": 12, "n_layers": 6, "parameters": 66_985_530}
SMALL_DISTILBERT = {"dim": 64, "hidden_dim": 256, "n_heads": 4}

SEED = 0


def fake_commit(repo_id: str) -> str:
    """A stable 40-hex "commit hash" for a repo: the snapshot folder name (and dataset cache hash)."""
    return hashlib.sha1(f"ftlab stand-in of {repo_id}".encode()).hexdigest()


def hub_snapshot(out: Path, repo_id: str) -> Path:
    """Create the hub-cache skeleton of a model repo and return its (empty) snapshot folder.

    ``out/hf/hub/models--<org>--<name>/refs/main`` names the commit; the files go in
    ``snapshots/<commit>/``. An existing stand-in of the same repo is replaced.
    """
    repo_dir = out / "hf" / "hub" / ("models--" + repo_id.replace("/", "--"))
    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    commit = fake_commit(repo_id)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)  # no newline, like huggingface_hub writes it
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def _rel(path: Path, out: Path) -> str:
    return str(path.relative_to(out))


# --------------------------------------------------------------------------------------------
# English for the tokenizers and for SST-2
# --------------------------------------------------------------------------------------------

# Common English words, most frequent first (the BPE trainer sees earlier words more often).
WORDS = """
the of and to a in is it you that he was for on are with as i his they be at one have this from
or had by not word but what some we can out other were all there when up use your how said an
each she which do their time if will way about many then them write would like so these her
long make thing see him two has look more day could go come did number sound no most people my
over know water than call first who may down side been now find any new work part take get
place made live where after back little only round man year came show every good me give our
under name very through just form sentence great think say help low line differ turn cause much
mean before move right boy old too same tell does set three want air well also play small end
put home read hand port large spell add even land here must big high such follow act why ask
men change went light kind off need house picture try us again animal point mother world near
build self earth father head stand own page should country found answer school grow study still
learn plant cover food sun four between state keep eye never last let thought city tree cross
farm hard start might story saw far sea draw left late run don't while press close night real
life few north open seem together next white children begin got walk example ease paper group
always music those both mark often letter until mile river car feet care second book carry took
science eat room friend began idea fish mountain stop once base hear horse cut sure watch color
face wood main enough plain girl usual young ready above ever red list though feel talk bird
soon body dog family direct pose leave song measure door product black short numeral class wind
question happen complete ship area half rock order fire south problem piece told knew pass since
top whole king space heard best hour better true during hundred five remember step early hold
west ground interest reach fast verb sing listen six table travel less morning ten simple
several vowel toward war lay against pattern slow center love person money serve appear road
map rain rule govern pull cold notice voice unit power town fine certain fly fall lead cry dark
machine note wait plan figure star box noun field rest correct able pound done beauty drive
stood contain front teach week final gave green quick develop ocean warm free minute strong
special mind behind clear tail produce fact street inch multiply nothing course stay wheel full
force blue object decide surface deep moon island foot system busy test record boat common gold
possible plane stead dry wonder laugh thousand ago ran check game shape equate hot miss brought
heat snow tire bring yes distant fill east paint language among photo photograph image picture
satellite view aerial blurry small tiny large low resolution centered crop pixel sample
airplane automobile cat deer frog truck ship airport highway industrial pasture permanent
residential herbaceous vegetation annual forest lake river sea meadow field building buildings
land crops road roads shrubland brushland
movie film story actor actress director scene script plot performance cast character characters
drama comedy thriller picture screen audience ending dialogue moment minutes hours effort
cinema work piece debut sequel
good great wonderful brilliant moving funny charming delightful beautiful smart clever fresh
engaging touching powerful gripping stunning warm witty honest solid lovely superb
bad boring dull awful terrible tedious weak flat silly lifeless clumsy painful bland messy
stupid pointless tiresome forgettable predictable shallow annoying dreadful
not never no hardly barely really quite rather almost truly simply utterly too very so
but although yet though however while because
""".split()

# Word endings, for WordPiece's ``##`` continuation pieces.
SUFFIXES = ["s", "es", "ed", "d", "ing", "ly", "er", "ers", "est", "ness", "ment", "ments", "tion",
            "tions", "sion", "able", "ible", "al", "ful", "less", "ity", "ous", "ive", "ize", "ise",
            "ism", "ist", "ists", "y", "ies", "en", "ic", "ical", "ship", "hood", "ward", "wise",
            "'s", "n't"]

POSITIVE = ["good", "great", "wonderful", "brilliant", "moving", "funny", "charming", "delightful",
            "beautiful", "smart", "clever", "fresh", "engaging", "touching", "powerful", "gripping",
            "stunning", "warm", "witty", "honest", "solid", "lovely", "superb"]
NEGATIVE = ["bad", "boring", "dull", "awful", "terrible", "tedious", "weak", "flat", "silly",
            "lifeless", "clumsy", "painful", "bland", "messy", "stupid", "pointless", "tiresome",
            "forgettable", "predictable", "shallow", "annoying", "dreadful"]
NOUNS = ["movie", "film", "story", "performance", "script", "plot", "cast", "ending", "dialogue",
         "comedy", "drama", "thriller", "debut", "sequel", "picture"]
ADVERBS = ["", "", "really ", "quite ", "rather ", "truly ", "utterly ", "very ", "simply "]


def sst2_sentence(rng: random.Random) -> tuple[str, int]:
    """One movie-review sentence in SST-2's style (lowercased, space before punctuation), and its label.

    Plain ("the plot is really dull ."), negated ("the cast is never charming ."; the label
    flips) or contrasted ("a dull script , but the ending is lovely ."; the second half wins).
    """
    def clause() -> tuple[str, int]:
        label = rng.randrange(2)
        adj = rng.choice(POSITIVE if label else NEGATIVE)
        noun = rng.choice(NOUNS)
        kind = rng.randrange(3)
        if kind == 0:
            return f"the {noun} is {rng.choice(ADVERBS)}{adj}", label
        if kind == 1:
            words = f"{rng.choice(ADVERBS)}{adj} {noun}"
            return ("an " if words[0] in "aeiou" else "a ") + words, label
        return f"the {noun} is {rng.choice(['not', 'never', 'hardly'])} {adj}", 1 - label

    first, label = clause()
    if rng.random() < 0.3:
        second, label = clause()
        first = f"{first} , {rng.choice(['but', 'yet', 'however'])} {second}"
    return first + " . ", label


def english_corpus(n_sentences: int = 2000) -> list[str]:
    """Lines of English the BPE merges are learnt from: review sentences, CLIP prompts, the word list."""
    rng = random.Random(SEED)
    lines = [sst2_sentence(rng)[0] for _ in range(n_sentences)]
    for name in CIFAR10_CLASSES + [c.lower() for c in EUROSAT_CLASSES]:
        lines += [f"a photo of a {name}.", f"a blurry photo of a {name}.", f"a satellite photo of {name}."]
    # Earlier words are more common: repeat them more, so their merges come first.
    lines += [" ".join(WORDS[: max(1, len(WORDS) - i * 60)]) for i in range(len(WORDS) // 60 + 1)]
    return lines


# --------------------------------------------------------------------------------------------
# CLIP: byte-level BPE tokenizer, image processor, shrunk CLIPModel
# --------------------------------------------------------------------------------------------

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map (the 256 base symbols, in vocab order)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_vocab_and_merges(vocab_size: int = 49408) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary layout filled with merges that tokenize English.

    ids 0-255: the byte symbols; 256-511: the same with ``</w>`` (end of word); 512-49405: one
    token per merge, in merge order (lower rank = applied first); 49406 ``<|startoftext|>``,
    49407 ``<|endoftext|>``. Merges: first those a BPE trainer learns from :func:`english_corpus`
    (whole common words become one token), then letter pairs and triples (so unseen words still
    fall into a few pieces) until the vocabulary is full.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    base = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(base + [s + "</w>" for s in base])}
    n_merges = vocab_size - len(vocab) - 2

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([  # CLIP's: words, single digits, punctuation runs
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, end_of_word_suffix="</w>",
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(english_corpus(), trainer=trainer)
    learnt = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(tok.to_str())["model"]["merges"]]

    merges: list[tuple[str, str]] = []

    def add(a: str, b: str) -> bool:
        if len(merges) >= n_merges or a not in vocab or b not in vocab or a + b in vocab:
            return False
        vocab[a + b] = len(vocab)
        merges.append((a, b))
        return True

    for a, b in learnt:
        add(a, b)
    letters = string.ascii_lowercase
    for a in letters:  # pairs, inside and at the end of a word
        for b in letters:
            add(a, b)
            add(a, b + "</w>")
    for a in letters:  # triples
        for b in letters:
            for c in letters:
                add(a + b, c)
                add(a + b, c + "</w>")
    for a in letters:  # quadruples, only as many as still fit
        for b in letters:
            for c in letters:
                for d in letters:
                    if len(merges) >= n_merges:
                        break
                    add(a + b + c, d + "</w>")
    if len(merges) != n_merges:
        raise RuntimeError(f"filled {len(merges)} of {n_merges} CLIP merges")
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def build_clip(out: Path) -> dict:
    """``openai/clip-vit-base-patch32``: a shrunk ``CLIPModel`` plus real-format processor files."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    snap = hub_snapshot(out, CLIP_REPO)
    vocab, merges = clip_vocab_and_merges()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=77)
    tokenizer.save_pretrained(snap)
    # Then the real repo's tokenizer_config.json and special_tokens_map.json (older format), so
    # loading takes the same path as for the released files.
    def special(text: str) -> dict:
        return {"content": text, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": True, "__type": "AddedToken"}

    specials = {"bos_token": special("<|startoftext|>"), "eos_token": special("<|endoftext|>"),
                "unk_token": special("<|endoftext|>"), "pad_token": "<|endoftext|>"}
    (snap / "tokenizer_config.json").write_text(json.dumps({
        **specials, "add_prefix_space": False, "errors": "replace", "do_lower_case": True,
        "name_or_path": CLIP_REPO, "model_max_length": 77,
        "special_tokens_map_file": "./special_tokens_map.json", "tokenizer_class": "CLIPTokenizer"}, indent=2) + "\n")
    (snap / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    # The real repo also ships the slow tokenizer's files; keep them for anything that reads them.
    (snap / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (snap / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    # The real repo's preprocessor_config.json, word for word (legacy keys included).
    (snap / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3, "size": 224}, indent=2) + "\n")

    common = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "attention_dropout": 0.0,
              "dropout": 0.0, "initializer_range": 0.02, "initializer_factor": 1.0, "projection_dim": 512}
    config = CLIPConfig(
        # bos 0 / eos 2 / pad 1 as in the real config.json: eos 2 makes CLIPTextModel pool at the
        # highest id in each row (<|endoftext|> = 49407), as the released model does.
        text_config={**common, **SMALL_TOWER, "vocab_size": 49408, "max_position_embeddings": 77,
                     "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1},
        vision_config={**common, **SMALL_TOWER, "image_size": 224, "patch_size": 32, "num_channels": 3},
        projection_dim=512, logit_scale_init_value=2.6592)
    config.architectures = ["CLIPModel"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = CLIPModel(config).eval()
    model.save_pretrained(snap)
    return {
        "kind": "hub model", "class": "CLIPModel + CLIPProcessor", "path": _rel(snap, out),
        "real": REAL_CLIP,
        "standin": {"text": SMALL_TOWER, "vision": SMALL_TOWER,
                    "parameters": sum(p.numel() for p in model.parameters())},
        "kept": {"vocab_size": 49408, "max_position_embeddings": 77, "image_size": 224, "patch_size": 32,
                 "projection_dim": 512, "bos/eos token ids": [49406, 49407]},
        "shrunk": True,
    }


# --------------------------------------------------------------------------------------------
# DistilBERT: uncased WordPiece tokenizer, shrunk DistilBertForMaskedLM
# --------------------------------------------------------------------------------------------

def wordpiece_vocab(vocab_size: int = 30522) -> list[str]:
    """BERT-uncased's vocabulary layout, filled with English.

    ``[PAD]`` 0, ``[unused0..98]`` 1-99, ``[UNK]`` 100, ``[CLS]`` 101, ``[SEP]`` 102, ``[MASK]``
    103, ``[unused99..993]`` 104-998 (as in the real vocab.txt), then single characters and
    their ``##`` forms (so no lowercase ASCII word is ever ``[UNK]``), whole words, ``##``
    suffixes, and letter pairs/triples (``ab``, ``##ab``, ``##abc``, ``abc``) until the
    vocabulary is full. WordPiece takes the longest prefix in the vocabulary, then the longest
    ``##`` piece, and so on: "unbelievable" -> un ##bel ##iev ##able.
    """
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [f"[unused{i}]" for i in range(99, 994)]
    seen = set(tokens)

    def add(t: str) -> None:
        if t not in seen and len(tokens) < vocab_size:
            seen.add(t)
            tokens.append(t)

    chars = string.punctuation + string.digits + string.ascii_lowercase
    for c in chars:
        add(c)
    for c in chars:
        add("##" + c)
    for w in WORDS:
        if w.isalpha():
            add(w)
    for s in SUFFIXES:
        add("##" + s)
    letters = string.ascii_lowercase
    pairs = [a + b for a in letters for b in letters]
    triples = [p + c for p in pairs for c in letters]
    for p in pairs:
        add(p)
    for p in pairs:
        add("##" + p)
    for t in triples:
        add("##" + t)
    for t in triples:
        add(t)
    if len(tokens) != vocab_size:
        raise RuntimeError(f"WordPiece vocabulary has {len(tokens)} tokens, wanted {vocab_size}")
    return tokens


def distilbert_tokenizer_json(vocab: list[str]) -> str:
    """``tokenizer.json`` of an uncased BERT WordPiece, built the way the real file is."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    tok.decoder = decoders.WordPiece(prefix="##")
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")])
    return tok.to_str()


def build_distilbert(out: Path) -> dict:
    """``distilbert-base-uncased``: a shrunk ``DistilBertForMaskedLM`` and the repo's tokenizer files."""
    import torch
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    snap = hub_snapshot(out, DISTILBERT_REPO)
    vocab = wordpiece_vocab()
    (snap / "vocab.txt").write_text("".join(t + "\n" for t in vocab))
    (snap / "tokenizer.json").write_text(distilbert_tokenizer_json(vocab))
    # The real tokenizer_config.json has just these two keys; the class comes from config.json.
    (snap / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}) + "\n")

    config = DistilBertConfig(
        vocab_size=30522, max_position_embeddings=512, n_layers=6, activation="gelu",
        dropout=0.1, attention_dropout=0.1, qa_dropout=0.1, seq_classif_dropout=0.2,
        initializer_range=0.02, sinusoidal_pos_embds=False, tie_weights_=True, pad_token_id=0,
        **SMALL_DISTILBERT)
    config.architectures = ["DistilBertForMaskedLM"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = DistilBertForMaskedLM(config).eval()
    model.save_pretrained(snap)
    return {
        "kind": "hub model", "class": "DistilBertForMaskedLM + DistilBertTokenizer (uncased WordPiece)",
        "path": _rel(snap, out), "real": REAL_DISTILBERT,
        "standin": {**SMALL_DISTILBERT, "n_layers": 6, "parameters": sum(p.numel() for p in model.parameters())},
        "kept": {"vocab_size": 30522, "max_position_embeddings": 512, "n_layers": 6,
                 "special ids": {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}},
        "shrunk": True,
    }


# --------------------------------------------------------------------------------------------
# ResNet-50 checkpoint for torchvision
# --------------------------------------------------------------------------------------------

def build_resnet50(out: Path) -> dict:
    """Random ResNet-50 weights where ``resnet50(weights="DEFAULT")`` finds them.

    The file name is the one in ``ResNet50_Weights.DEFAULT.url`` (its hash part is checked only
    on download). The architecture cannot shrink: torchvision builds the real ResNet-50 and
    loads the file with ``strict=True``. BatchNorm running statistics are set by one forward
    pass over random images in train mode, so eval-mode features stay of order one instead of
    growing through 16 residual blocks.
    """
    import torch
    from torchvision.models import ResNet50_Weights, resnet50

    weights = ResNet50_Weights.DEFAULT
    path = out / "torch" / "hub" / "checkpoints" / Path(weights.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        net = resnet50(num_classes=len(weights.meta["categories"]))
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for bn in bns:
            bn.momentum = None  # cumulative average: one batch sets the statistics
        with torch.no_grad():
            net.train()(torch.randn(8, 3, 64, 64))
        for bn in bns:
            bn.momentum = 0.1
    torch.save(net.state_dict(), path)
    return {
        "kind": "torchvision weights", "class": "torchvision.models.resnet50", "path": _rel(path, out),
        "weights": str(weights), "url": weights.url,
        "real": {"parameters": sum(p.numel() for p in net.parameters())},
        "standin": {"parameters": sum(p.numel() for p in net.parameters())},
        "shrunk": False,
        "note": "not shrunk: torchvision builds the real architecture and loads the state dict strictly; "
                "random weights (seed 0), BatchNorm statistics from random images",
    }


# --------------------------------------------------------------------------------------------
# Datasets: the datasets cache (CIFAR-10, SST-2) and a torchvision folder (EuroSAT)
# --------------------------------------------------------------------------------------------

def write_datasets_cache(out: Path, repo_id: str, config_name: str, features, splits: dict[str, dict]) -> Path:
    """Write ``splits`` (name -> column dict) as an earlier online ``load_dataset(repo_id)`` would have.

    Folder: ``hf/datasets/<org>___<name>/<config>/0.0.0/<commit>/`` holding
    ``<name>-<split>.arrow`` (Arrow stream format, values encoded by ``features``: an ``Image``
    column stores PNG bytes) and ``dataset_info.json``. Offline, ``load_dataset(repo_id)`` finds
    the newest such folder whose ``dataset_info.json`` names the same config as its folder.
    """
    from datasets import Dataset, DatasetInfo, SplitDict, SplitInfo
    from datasets.arrow_writer import ArrowWriter
    from datasets.naming import camelcase_to_snakecase

    namespace, name = repo_id.split("/")
    name = camelcase_to_snakecase(name)
    root = out / "hf" / "datasets" / f"{namespace}___{name}"
    if root.exists():
        shutil.rmtree(root)
    folder = root / config_name / DATASET_VERSION / fake_commit(repo_id)
    folder.mkdir(parents=True)
    split_dict = SplitDict(dataset_name=name)
    for split, columns in splits.items():
        table = Dataset.from_dict(columns, features=features).data.table  # encodes images to PNG
        writer = ArrowWriter(features=features, path=str(folder / f"{name}-{split}.arrow"))
        writer.write_table(table)
        num_examples, num_bytes = writer.finalize()
        split_dict.add(SplitInfo(name=split, num_bytes=num_bytes, num_examples=num_examples, dataset_name=name))
    info = DatasetInfo(features=features, builder_name="parquet", dataset_name=name, config_name=config_name,
                       version=DATASET_VERSION, splits=split_dict,
                       dataset_size=sum(s.num_bytes for s in split_dict.values()))
    info.write_to_directory(str(folder))
    return folder


def _palette(k: int, n: int) -> tuple[int, int, int]:
    """An RGB colour for class ``k`` of ``n``: hues spread around the colour wheel."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(k / n, 0.65, 0.85)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_image(rng: random.Random, label: int, n_classes: int, size: int):
    """A random-ish picture whose colours lean towards its class (so a probe can learn something).

    Background: a two-colour vertical gradient; on it 1-3 ellipses, rectangles or triangles
    in the class colour, jittered. Returns an RGB ``PIL.Image``.
    """
    from PIL import Image, ImageDraw

    base = _palette(label, n_classes)

    def jitter(c, amount=60):
        return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in c)

    top, bottom = jitter((128, 128, 128), 100), jitter((128, 128, 128), 100)
    img = Image.new("RGB", (size, size))
    px = img.load()
    for y in range(size):
        t = y / (size - 1)
        row = tuple(int(a * (1 - t) + b * t) for a, b in zip(top, bottom))
        for x in range(size):
            px[x, y] = row
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(1, 3)):
        x0, y0 = rng.randrange(size // 2), rng.randrange(size // 2)
        x1, y1 = x0 + rng.randint(size // 4, size // 2), y0 + rng.randint(size // 4, size // 2)
        shape, fill = rng.randrange(3), jitter(base, 40)
        if shape == 0:
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        elif shape == 1:
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=fill)
    return img


def build_cifar10(out: Path) -> dict:
    """``uoft-cs/cifar10`` (config ``plain_text``): ``img`` (Image, 32x32 RGB PNG) and ``label`` (ClassLabel)."""
    from datasets import ClassLabel, Features, Image

    features = Features({"img": Image(), "label": ClassLabel(names=CIFAR10_CLASSES)})
    rng = random.Random(SEED + 10)
    splits = {}
    for split, n in CIFAR10_ROWS.items():
        labels = [i % 10 for i in range(n)]
        rng.shuffle(labels)
        splits[split] = {"img": [draw_image(rng, y, 10, 32) for y in labels], "label": labels}
    folder = write_datasets_cache(out, CIFAR10_REPO, CIFAR10_CONFIG, features, splits)
    return {"kind": "hub dataset (datasets cache)", "class": "datasets.DatasetDict", "path": _rel(folder, out),
            "config": CIFAR10_CONFIG, "columns": {"img": "Image (32x32 RGB PNG)", "label": "ClassLabel(10)"},
            "real": {"rows": {"train": 50_000, "test": 10_000}}, "standin": {"rows": dict(CIFAR10_ROWS)},
            "shrunk": True}


def build_sst2(out: Path) -> dict:
    """``stanfordnlp/sst2``: ``idx`` (int32), ``sentence`` (string), ``label`` (ClassLabel; test rows -1)."""
    from datasets import ClassLabel, Features, Value

    features = Features({"idx": Value("int32"), "sentence": Value("string"),
                         "label": ClassLabel(names=["negative", "positive"])})
    rng = random.Random(SEED + 20)
    splits = {}
    for split, n in SST2_ROWS.items():
        rows = [sst2_sentence(rng) for _ in range(n)]
        labels = [-1] * n if split == "test" else [y for _, y in rows]  # SST-2 hides its test labels
        splits[split] = {"idx": list(range(n)), "sentence": [s for s, _ in rows], "label": labels}
    folder = write_datasets_cache(out, SST2_REPO, SST2_CONFIG, features, splits)
    return {"kind": "hub dataset (datasets cache)", "class": "datasets.DatasetDict", "path": _rel(folder, out),
            "config": SST2_CONFIG, "columns": {"idx": "int32", "sentence": "string",
                                               "label": "ClassLabel(negative, positive); test: -1"},
            "real": {"rows": {"train": 67_349, "validation": 872, "test": 1_821}},
            "standin": {"rows": dict(SST2_ROWS)}, "shrunk": True}


def build_eurosat(out: Path) -> dict:
    """EuroSAT RGB as ``torchvision.datasets.EuroSAT(root=<out>/cache)`` expects it after a download.

    ``<root>/eurosat/2750/<Class>/<Class>_<i>.jpg``, 64x64 RGB JPEGs, i from 1 as in the real
    archive. ``download=True`` returns at once because ``<root>/eurosat/2750`` exists.
    """
    base = out / "cache" / "eurosat"
    if base.exists():
        shutil.rmtree(base)
    rng = random.Random(SEED + 30)
    for k, name in enumerate(EUROSAT_CLASSES):
        folder = base / "2750" / name
        folder.mkdir(parents=True)
        for i in range(1, EUROSAT_PER_CLASS + 1):
            buf = io.BytesIO()
            draw_image(rng, k, len(EUROSAT_CLASSES), 64).save(buf, format="JPEG", quality=90)
            (folder / f"{name}_{i}.jpg").write_bytes(buf.getvalue())
    return {"kind": "torchvision dataset folder", "class": "torchvision.datasets.EuroSAT",
            "path": _rel(base / "2750", out), "classes": list(EUROSAT_CLASSES),
            "real": {"rows": 27_000}, "standin": {"rows": EUROSAT_PER_CLASS * len(EUROSAT_CLASSES),
                                                  "per_class": EUROSAT_PER_CLASS},
            "shrunk": True}


# --------------------------------------------------------------------------------------------
# Entry point for scripts/build_standins.py
# --------------------------------------------------------------------------------------------

BUILDERS = {
    CLIP_REPO: build_clip,
    DISTILBERT_REPO: build_distilbert,
    "torchvision resnet50 (ResNet50_Weights.DEFAULT)": build_resnet50,
    CIFAR10_REPO: build_cifar10,
    "torchvision EuroSAT": build_eurosat,
    SST2_REPO: build_sst2,
}


def build(out: Path) -> dict:
    """Build every vision stand-in (and SST-2) under ``out``; return ``{name: manifest entry}``.

    ``out/hf`` is HF_HOME, ``out/torch`` TORCH_HOME, ``out/cache`` FTLAB_CACHE. Re-running
    replaces these stand-ins and leaves everything else in ``out`` alone. Each entry says what
    was built, where (relative to ``out``), the real vs stand-in sizes, whether it was shrunk,
    and how many seconds it took.
    """
    out = Path(out)
    manifest = {}
    for name, builder in BUILDERS.items():
        start = time.perf_counter()
        entry = builder(out)
        entry["seconds"] = round(time.perf_counter() - start, 2)
        manifest[name] = entry
    return manifest


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder to build into (HF_HOME=<out>/hf, TORCH_HOME=<out>/torch, "
                                               "FTLAB_CACHE=<out>/cache)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    print(json.dumps(build(args.out), indent=2))
    print(f"built in {time.perf_counter() - t0:.1f} s")
