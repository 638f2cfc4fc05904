"""Offline stand-ins for the hub's language models and datasets (the ``full`` profile's, shrunk).

The ``full`` profile loads real repositories from the Hugging Face hub. To rehearse it without a
network, :func:`build` writes small random-weight copies of them into a private ``HF_HOME``,
exactly where the libraries look when they are offline, so the course's unchanged calls

    AutoModelForCausalLM.from_pretrained("TinyLlama/TinyLlama_v1.1")
    AutoTokenizer.from_pretrained("meta-llama/Llama-3.2-1B")
    datasets.load_dataset("yahma/alpaca-cleaned", split="train")

find them. Nothing here is a real model: the weights are seeded noise, so anything they
generate is noise too. What is real is everything the *code* depends on: class names, config
keys, the number of layers, vocabulary sizes, special tokens and their ids, the chat template's
conventions, dtypes, dataset splits, column names and feature types.

Where the libraries look (checked in the installed sources)
-----------------------------------------------------------
- Models and tokenizers (``transformers`` through ``huggingface_hub``): with ``HF_HUB_OFFLINE=1``
  a repo id resolves through the hub cache ``$HF_HOME/hub/models--ORG--NAME``: ``refs/main``
  holds a commit hash, ``snapshots/<hash>/`` holds the files. Files may be plain files there
  (what the hub writes when it cannot make symlinks), so no ``blobs/`` folder is needed.
- Datasets (``datasets`` 5.2, ``load.py: dataset_module_factory``): offline, the hub is never
  asked; the call falls back to ``CachedDatasetModuleFactory``, which reads the *prepared* Arrow
  cache ``$HF_HOME/datasets/ORG___NAME/<config>/<version>/<hash>/`` (``dataset_info.json`` and
  ``NAME-SPLIT.arrow``), the folder a first online ``load_dataset`` leaves behind. The stand-in
  writes that folder with a ``datasets`` builder (so the library writes its own format), from
  parquet files it also puts into the hub cache
  (``$HF_HOME/hub/datasets--ORG--NAME/snapshots/<hash>/data/``), as an online load would have
  downloaded them. The hub-cache copy is not on the offline load path.

What was shrunk
---------------
Widths shrink; depth, vocabulary and every id stay real, so layer-indexed code ("unfreeze the
last 2 blocks"), LoRA target names, special-token handling and embedding sizes behave alike.

| repo | key | real | stand-in |
|---|---|---|---|
| TinyLlama/TinyLlama_v1.1 | hidden_size | 2048 | 64 |
| | intermediate_size | 5632 | 176 (same 2.75x ratio) |
| | num_attention_heads / num_key_value_heads | 32 / 4 (GQA 8:1) | 4 / 2 (GQA 2:1) |
| | num_hidden_layers | 22 | 22 |
| | vocab_size | 32000 | 32000 |
| | parameters | 1.10 B (float32) | 5.1 M (float32; 4.1 M of it the two 32000 x 64 embeddings) |
| meta-llama/Llama-3.2-1B | hidden_size | 2048 | 64 |
| | intermediate_size | 8192 | 256 (same 4x ratio) |
| | num_attention_heads / num_key_value_heads / head_dim | 32 / 8 / 64 (GQA 4:1) | 8 / 2 / 8 (GQA 4:1) |
| | num_hidden_layers | 16 | 16 |
| | vocab_size (tied embeddings) | 128256 | 128256 |
| | parameters | 1.24 B (bfloat16) | 9.2 M (bfloat16; 8.2 M of it the tied 128256 x 64 embedding) |
| yahma/alpaca-cleaned | rows (train) | ~51,760 | 1,500 |
| trl-lib/ultrafeedback_binarized | rows (train / test) | ~62,100 / ~1,000 | 400 / 200 |

Every other config key and value is the real repo's (rope_theta, rope_scaling, rms_norm_eps,
max_position_embeddings, token ids, tie_word_embeddings, the declared dtype).

Tokenizers
----------
Trained here with the ``tokenizers`` library on generated English, then padded to the real size
with never-produced filler pieces, so ``len(tokenizer)`` and every special id match:

- TinyLlama: Llama/SentencePiece conventions: BPE with byte fallback (``<0x00>``..``<0xFF>`` at
  ids 3..258), ``<unk>``=0, ``<s>``=1, ``</s>``=2, ``tokenizer_class`` ``LlamaTokenizer``, adds
  ``<s>``, no pad token, no chat template (ftlab gives it one). The real repo also ships
  ``tokenizer.model`` (SentencePiece); transformers 5 reads ``tokenizer.json``, so it is left out.
- Llama-3.2-1B: byte-level BPE with Llama 3's split regex, 128000 regular ids then 256 special
  tokens (``<|begin_of_text|>``=128000, ``<|end_of_text|>``=128001, ``<|start_header_id|>``=128006,
  ``<|end_header_id|>``=128007, ``<|eot_id|>``=128009, ...), ``PreTrainedTokenizerFast``, adds
  ``<|begin_of_text|>``, no pad token, and a chat template in the Llama 3 convention. It keeps the
  real trap: a turn ends with ``<|eot_id|>`` while ``eos_token`` (and the generation config's
  ``eos_token_id``) is ``<|end_of_text|>``, so SFT on the template never shows the model the EOS.

Everything is seeded: rebuilding writes byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from pathlib import Path

SEED = 1234
# Part of every stand-in's fake commit hash: bump it when the stand-ins change, so that caches
# keyed on the commit (the datasets cache is) do not mix old and new.
STANDIN_VERSION = "1"

# --------------------------------------------------------------------------------------------
# The hub cache
# --------------------------------------------------------------------------------------------


def fake_commit(repo_type: str, repo_id: str) -> str:
    """A stable 40-hex "commit" for a stand-in (the hub cache names snapshots by commit)."""
    return hashlib.sha1(f"ftlab-standin/{STANDIN_VERSION}/{repo_type}/{repo_id}".encode()).hexdigest()


def fresh_snapshot(hub: Path, repo_type: str, repo_id: str) -> tuple[Path, str]:
    """Empty ``hub/<type>s--ORG--NAME/snapshots/<commit>/`` with ``refs/main`` pointing at it.

    Any earlier copy of the repo is removed first, so a rebuild leaves no stale file behind.
    """
    folder = hub / f"{repo_type}s--{repo_id.replace('/', '--')}"
    if folder.exists():
        shutil.rmtree(folder)
    commit = fake_commit(repo_type, repo_id)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)  # the hub writes the hash without a newline
    return snapshot, commit


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Generated English: the tokenizers' training text and the datasets' rows
# --------------------------------------------------------------------------------------------

TOPICS = [
    "renewable energy", "the water cycle", "machine learning", "healthy sleep", "public libraries",
    "urban gardening", "the printing press", "remote work", "photosynthesis", "the stock market",
    "volcanoes", "honeybees", "electric cars", "online privacy", "the Roman Empire", "recycling",
    "meditation", "social media", "space exploration", "coffee", "chess", "the human heart",
    "suspension bridges", "jazz music", "rainforests", "vaccines", "personal budgeting",
    "team sports", "the moon", "ocean tides", "solar panels", "bread baking", "migrating birds",
    "the internet", "earthquakes", "public transport", "classical music", "cloud computing",
    "friendship", "the immune system", "video games", "wind turbines", "ancient Egypt",
    "time management", "coral reefs", "democracy", "the French Revolution", "black holes",
]
AUDIENCES = ["a ten-year-old", "a busy manager", "a new employee", "a high school student",
             "a complete beginner", "someone who has never heard of it", "a retired engineer",
             "a group of tourists"]
TASKS = [
    "save money on groceries", "learn a new language", "improve your writing", "stay focused while "
    "studying", "reduce plastic waste", "prepare for a job interview", "start running",
    "keep houseplants alive", "sleep better", "organize a small team", "cook healthy meals on a "
    "budget", "make a good first impression", "read more books", "manage stress at work",
    "plan a road trip", "write a clear email", "learn to play the guitar", "take better photos",
]
COUNTRIES = [("France", "Paris"), ("Japan", "Tokyo"), ("Canada", "Ottawa"), ("Brazil", "Brasilia"),
             ("Kenya", "Nairobi"), ("Australia", "Canberra"), ("Norway", "Oslo"), ("Egypt", "Cairo"),
             ("India", "New Delhi"), ("Mexico", "Mexico City"), ("Spain", "Madrid"),
             ("Argentina", "Buenos Aires"), ("Germany", "Berlin"), ("Peru", "Lima")]
NAMES = ["Alice", "Ben", "Carmen", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
         "Keiko", "Liam", "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Samir", "Tara"]
PLACES = ["a small village by the sea", "a busy city", "an old farmhouse", "a mountain town",
          "a quiet suburb", "an island", "a research station", "a river town"]
GOALS = ["find a lost dog", "open a bakery", "win a chess tournament", "build a treehouse",
         "learn to paint", "climb the highest hill", "repair an old radio", "plant a garden",
         "write a novel", "organize a music festival"]
ADJECTIVES = ["important", "surprising", "useful", "complex", "fascinating", "practical",
              "misunderstood", "powerful", "fragile", "essential", "unusual", "simple"]
GOOD = ["clear", "helpful", "delightful", "excellent", "reliable", "friendly", "beautiful", "fast"]
BAD = ["confusing", "disappointing", "slow", "broken", "rude", "noisy", "expensive", "boring"]
PRODUCTS = ["this phone", "the new laptop", "this restaurant", "the hotel", "this book",
            "the coffee maker", "this movie", "the delivery service"]

# Sentences about a topic; {t} is the topic, the other slots are filled at random.
SENTENCES = [
    "{T} is {adj} because it touches many parts of everyday life.",
    "Many people first learn about {t} at school, but the details are often forgotten.",
    "Scientists have studied {t} for decades, and new findings still appear every year.",
    "One way to understand {t} is to compare it with something familiar, such as a kitchen or a garden.",
    "The history of {t} shows how small ideas can grow into large changes.",
    "Critics argue that {t} is overrated, while supporters point to clear benefits.",
    "In practice, {t} depends on careful planning, patience and good information.",
    "A common mistake is to think that {t} only matters to experts.",
    "Experts usually recommend starting with the basics before moving to harder questions.",
    "For example, a city that invests in {t} may see results within a few years.",
    "The cost of {t} has changed a lot over the last twenty years.",
    "It is worth remembering that {t} looks different in different countries.",
    "Some of the most interesting questions about {t} are still open.",
    "Teachers often use simple experiments to show how {t} works.",
    "If you want to learn more, a good library book or a short online course is a fine start.",
    "The main idea is simple: small, steady steps add up over time.",
    "Data from several studies suggests that the effect is real but smaller than many expect.",
    "People who work with {t} every day describe it as {adj} and sometimes {adj2}.",
    "There are at least three things to keep in mind: the goal, the resources, and the timeline.",
    "Overall, {t} is a good example of how science and daily life meet.",
    "Without {t}, many familiar routines would look very different.",
    "The word itself is older than most people think.",
    "Because of this, governments and companies pay close attention to {t}.",
    "Still, nobody should expect a single answer that fits every situation.",
]
STORY = [
    "{n} lived in {place} and dreamed of a chance to {goal}.",
    "Every morning {n} walked past the old market and thought about the plan.",
    "At first nothing went right: the weather was bad and the money ran short.",
    "A neighbour named {m} offered to help, although {m} had little time.",
    "Together they made a list of everything they would need.",
    "Weeks passed, and the work became slower but also more careful.",
    "One evening a storm knocked out the lights, and {n} almost gave up.",
    "The next day, a letter arrived with news nobody expected.",
    "{n} laughed for the first time in days and went back to work.",
    "By the end of the summer, the whole town knew what {n} had done.",
    "{m} said it was the most {adj} thing the town had seen in years.",
    "Looking back, {n} understood that the hardest part had been starting.",
]

# About 1,300 common English words (with inflections and contractions), so that the tokenizers
# learn whole-word pieces for everyday text, not only for the templates' vocabulary.
COMMON_WORDS = """
a about above across act action actually add added adding address after again against age ago
agree agreed ahead air all allow allowed almost alone along already also although always am
among amount an analysis and animal animals another answer answered answers any anyone anything
appear appears apple apply approach are area areas aren't argue arm around arrive art article as
ask asked asking at attack attention audience author available average avoid away baby back bad
bag ball bank bar base based basic be beautiful became because become becomes bed been before
began begin beginning behavior behind being believe believed below benefit best better between
beyond big bill bird birds bit black blood blue board boat body book books born both box boy
brain break bring brother brought brown build building built business busy but buy by call called
calls came camera campaign can can't cancer candidate cannot capital car card care career carry
case cases cat catch cause caused cell center central century certain certainly chair challenge
chance change changed changes character charge cheap check child children choice choose chose
church citizen city civil claim class classes clean clear clearly close closed coach code cold
collection college color come comes coming common community company compare compared complete
computer concern condition conference consider considered contain continue control cook cool
copy corner correct cost costs could couldn't council count country couple course court cover
create created creative crime cultural culture cup current customer cut dark data date daughter
day days dead deal death debate decade decide decided decision deep defense degree degrees
democratic describe described design despite detail details determine develop developed
development did didn't die difference different difficult dinner direction director discover
discuss discussion disease do doctor does doesn't dog dogs doing don't done door down draw dream
drive driver drop drug during each early earth east easy eat economic economy edge education
effect effects effort eight either election else employee end energy enjoy enough enter entire
environment environmental equal especially establish even evening event events ever every
everybody everyone everything evidence exactly example examples executive exist expect
experience expert explain explained eye eyes face fact factor fail fall family far fast father
fear federal feel feeling feels feet felt few field fight figure fill film final finally
financial find fine finger finish fire firm first fish five floor fly focus follow following
food foot for force foreign forget form former forward found four free friend friends from front
full fund future game games garden gas general generation get gets getting girl give given gives
glass go goal goes going gone good got government great green ground group grow growing growth
guess gun guy had hair half hand hands hang happen happened happy hard has hasn't have haven't
having he he's head health hear heard heart heat heavy held help helped helpful helps her here
herself high him himself his history hit hold home hope hospital hot hotel hour hours house
how however huge human hundred husband I I'd I'll I'm I've idea ideas identify if image imagine
impact important improve in include included including increase indeed indicate individual
industry information inside instead institution interest interesting international interview
into investment involve is isn't issue issues it it's item items its itself job jobs join just
keep key kid kids kill kind kitchen knew know knowledge known land language large last late later
laugh law lawyer lay lead leader learn learned learning least leave left leg legal less let let's
letter level lie life light like likely line list listen little live lived lives living local
long look looked looking lose loss lost lot love low machine made magazine main maintain major
majority make makes making man manage management manager many market marriage material matter
may maybe me mean means measure media medical meet meeting member memory mention message method
middle might military million mind minute minutes miss mission model modern moment money month
months more morning most mother mouth move movement movie much music must my myself name nation
national natural nature near nearly necessary need needed needs network never new news newspaper
next nice night nine no none nor north not note nothing notice now number numbers occur of off
offer office officer official often oh oil ok old on once one ones only onto open operation
opportunity option or order organization other others our out outside over own owner page pain
painting paper parent parents part participant particular particularly partner party pass past
patient pattern pay peace people per percent perform performance perhaps period person personal
phone physical pick picture piece place plan plant play player please point police policy
political politics poor popular population position positive possible power practice prepare
present president pressure pretty prevent price private probably problem problems process
produce product production professional professor program project property protect prove
provide public pull purpose push put quality question questions quickly quite race radio raise
range rate rather reach read reading ready real reality realize really reason reasons receive
recent recently recognize record red reduce reflect region relate relationship religious remain
remember remove report represent require research resource respond response responsibility rest
result results return reveal rich right rise risk road rock role room rule run running safe said
same save saw say saying says scene school science scientist score sea season seat second
section security see seek seem seems seen sell send senior sense series serious serve service set
seven several sex shake share she she's shoot short shot should shoulder show showed side sign
significant similar simple simply since sing single sister sit site situation six size skill
skin small smile so social society soldier some somebody someone something sometimes son song
soon sort sound source south southern space speak special specific speech spend sport spring
staff stage stand standard star start started state statement station stay step steps still
stock stop store story strategy street strong structure student students study stuff style
subject success successful such suddenly suffer suggest summer support sure surface system
table take taken takes talk task tax teach teacher team technology television tell ten tend term
test than thank thanks that that's the their them themselves then theory there there's these
they they're thing things think thinking third this those though thought thousand threat three
through throughout throw thus time times to today together tonight too took top total tough
toward town trade traditional training travel treat treatment tree trial trip trouble true truth
try trying turn TV two type under understand unit until up upon us use used useful user uses
using usually value various very victim view violence visit voice vote wait walk wall want
wanted war was wasn't watch water way ways we we'll we're we've weapon wear week weeks weight
well went were weren't west western what what's whatever when where whether which while white
who whole whom whose why wide wife will win wind window wish with within without woman women
won't wonder word words work worked worker working works world worry worried would wouldn't
write writer writing written wrong yard yeah year years yes yet you you'd you'll you're you've
young your yourself
Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June
July August September October November December English Spanish French German Chinese Python
JavaScript America Europe Africa Asia London York California Google Amazon Microsoft Apple
"""



class EnglishGenerator:
    """Seeded generator of English instructions, answers, stories and preference pairs.

    Not meant to be good writing: it must look like English to a tokenizer (common words,
    punctuation, numbers, newlines, lists) and have the shape of the real datasets (short and
    long answers, optional inputs, long prompts).
    """

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    # -- pieces
    def pick(self, items):
        return self.rng.choice(items)

    def sentence(self, topic: str) -> str:
        adj, adj2 = self.rng.sample(ADJECTIVES, 2)
        text = self.pick(SENTENCES).format(t=topic, T=topic[0].upper() + topic[1:], adj=adj, adj2=adj2)
        return text

    def paragraph(self, topic: str, n: int) -> str:
        return " ".join(self.sentence(topic) for _ in range(n))

    def essay(self, topic: str, paragraphs: int) -> str:
        return "\n\n".join(self.paragraph(topic, self.rng.randint(3, 6)) for _ in range(paragraphs))

    def story(self, sentences: int) -> str:
        n, m = self.rng.sample(NAMES, 2)
        place, goal, adj = self.pick(PLACES), self.pick(GOALS), self.pick(ADJECTIVES)
        lines = [STORY[0]] + self.rng.sample(STORY[1:], min(sentences, len(STORY) - 1))
        text = " ".join(s.format(n=n, m=m, place=place, goal=goal, adj=adj) for s in lines)
        return text

    def tips(self, task: str, k: int) -> str:
        verbs = ["Start", "Try to", "Remember to", "Make time to", "Plan to", "Ask a friend to help you"]
        things = ["set a small goal each week", "write down what worked", "keep a simple routine",
                  "measure your progress", "learn from one good example", "rest when you need to",
                  "remove distractions", "review your notes every evening", "celebrate small wins"]
        chosen = self.rng.sample(things, k)
        return "\n".join(f"{i + 1}. {self.pick(verbs)} {t}." for i, t in enumerate(chosen))

    def review(self, positive: bool) -> str:
        words = GOOD if positive else BAD
        a, b = self.rng.sample(words, 2)
        return f"I tried {self.pick(PRODUCTS)} last week. It was {a} and honestly quite {b}."

    # -- rows
    def instruction(self) -> dict:
        """One Alpaca-style row: ``instruction``, ``input`` (often empty), ``output``."""
        r, kind = self.rng, self.rng.randrange(12)
        topic = self.pick(TOPICS)
        inp = ""
        if kind == 0:
            ins, out = f"Explain {topic} to {self.pick(AUDIENCES)}.", self.essay(topic, r.randint(1, 3))
        elif kind == 1:
            task, k = self.pick(TASKS), r.randint(3, 6)
            ins, out = f"Give {k} tips to {task}.", self.tips(task, k)
        elif kind == 2:
            lines = [self.sentence(topic).rstrip(".") for _ in range(4)]
            ins, out = f"Write a short poem about {topic}.", "\n".join(lines)
        elif kind == 3:
            inp = self.paragraph(topic, r.randint(4, 8))
            ins, out = "Summarize the following text in one sentence.", self.sentence(topic)
        elif kind == 4:
            inp = f"the {self.pick(PRODUCTS).split()[-1]} was really {self.pick(BAD)} and we didnt like it"
            ins = "Rewrite the following sentence in a more formal tone."
            out = inp[0].upper() + inp[1:].replace("really", "rather").replace("didnt like it",
                                                                                 "did not enjoy it") + "."
        elif kind == 5:
            positive = r.random() < 0.5
            inp = self.review(positive)
            ins, out = "Classify the sentiment of this review as positive or negative.", (
                "Positive" if positive else "Negative")
        elif kind == 6:
            country, capital = self.pick(COUNTRIES)
            ins, out = f"What is the capital of {country}?", f"The capital of {country} is {capital}."
        elif kind == 7:
            ins = f"Write a story about a person who wants to {self.pick(GOALS)}."
            out = "\n\n".join(self.story(r.randint(5, 11)) for _ in range(r.randint(1, 3)))
        elif kind == 8:
            other = self.pick([t for t in TOPICS if t != topic])
            ins = f"Compare {topic} and {other}."
            out = self.paragraph(topic, r.randint(2, 4)) + "\n\n" + self.paragraph(other, r.randint(2, 4))
        elif kind == 9:
            a, b = r.randint(2, 9999), r.randint(2, 9999)
            ins, out = f"Add the numbers {a} and {b}.", f"The sum of {a} and {b} is {a + b}."
        elif kind == 10:
            ins = f"Describe the advantages and disadvantages of {topic}."
            out = ("Advantages:\n" + self.paragraph(topic, r.randint(3, 6)) + "\n\nDisadvantages:\n"
                   + self.paragraph(topic, r.randint(3, 6)))
        else:
            name = self.pick(NAMES)
            ins = f"Write an email to {name} about a meeting on {topic}."
            out = (f"Dear {name},\n\nI would like to invite you to a short meeting about {topic} next "
                   f"week. {self.paragraph(topic, r.randint(2, 5))}\n\nBest regards,\n{self.pick(NAMES)}")
        return {"output": out, "input": inp, "instruction": ins}

    def preference(self) -> dict:
        """One UltraFeedback-style row: chosen/rejected conversations (user, assistant) and scores."""
        r = self.rng
        topic = self.pick(TOPICS)
        if r.random() < 0.3:  # a long prompt: a passage and a question, a few hundred tokens
            prompt = ("Read the following passage and answer the question.\n\n"
                      + self.essay(topic, r.randint(2, 4))
                      + f"\n\nQuestion: according to the passage, why is {topic} {self.pick(ADJECTIVES)}?")
        else:
            row = self.instruction()
            prompt = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
            topic = topic if r.random() < 0.5 else self.pick(TOPICS)
        chosen = self.essay(topic, r.randint(1, 3))
        kind = r.randrange(3)
        if kind == 0:  # short and vague
            rejected = self.sentence(topic)
        elif kind == 1:  # off topic
            rejected = self.paragraph(self.pick([t for t in TOPICS if t != topic]), r.randint(2, 5))
        else:  # an unhelpful refusal
            rejected = "I'm sorry, but I can't help with that request."
        score_chosen = r.choice([6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0])
        score_rejected = r.choice([s for s in (1.0, 2.0, 3.0, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0) if s < score_chosen])

        def talk(answer):
            return [{"content": prompt, "role": "user"}, {"content": answer, "role": "assistant"}]

        return {"chosen": talk(chosen), "rejected": talk(rejected),
                "score_chosen": score_chosen, "score_rejected": score_rejected}

    def word_salad(self, words: list[str], n: int) -> str:
        """``n`` words at random, some capitalized, with punctuation: coverage, not meaning."""
        out = []
        for _ in range(n):
            word = self.pick(words)
            if self.rng.random() < 0.15:
                word = word[0].upper() + word[1:]
            out.append(word + self.pick(["", "", "", "", "", ",", ".", "?", "!", ";", ":"]))
        return " ".join(out)

    def corpus(self, n: int) -> list[str]:
        """Training text for the tokenizers: instruction rows and answers, and common words."""
        texts = []
        for _ in range(n):
            row = self.instruction()
            texts.append("\n".join(v for v in (row["instruction"], row["input"], row["output"]) if v))
        words = COMMON_WORDS.split()
        texts += [self.word_salad(words, 200) for _ in range(len(words) // 20)]
        texts += ['He said "yes" (twice) - and 3.5% of them, or $120, e.g. #1 & @home; 10:30 a.m.*']
        return texts

    def pseudo_words(self, n: int, taken: set[str], prefix: str = "") -> list[str]:
        """``n`` distinct pronounceable non-words (``prefix`` + syllables) not in ``taken``."""
        onsets = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v",
                  "w", "z", "br", "ch", "cl", "dr", "gr", "pl", "sh", "st", "th", "tr"]
        vowels = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"]
        codas = ["", "", "n", "r", "s", "l", "m", "t", "nd", "st"]
        words, seen = [], set(taken)
        while len(words) < n:
            word = prefix + "".join(self.pick(onsets) + self.pick(vowels) + self.pick(codas)
                                    for _ in range(self.rng.randint(2, 4)))
            if word not in seen:
                seen.add(word)
                words.append(word)
        return words


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------

def _trained_vocab_and_merges(tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def _pad_vocab(vocab: dict[str, int], size: int, fillers: list[str]) -> dict[str, int]:
    """Extend ``vocab`` with ``fillers`` up to ``size`` entries (ids contiguous)."""
    vocab = dict(vocab)
    for piece in fillers[: size - len(vocab)]:
        vocab[piece] = len(vocab)
    if len(vocab) != size:
        raise RuntimeError(f"vocabulary has {len(vocab)} entries, expected {size}")
    return vocab


def _added(content: str) -> dict:
    """An added special token as tokenizer_config.json's ``added_tokens_decoder`` writes it."""
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True}


def llama2_tokenizer(texts: list[str], gen: EnglishGenerator, vocab_size: int = 32000):
    """A Llama/SentencePiece-style tokenizer: ``(tokenizers.Tokenizer, tokenizer_config, special_map)``.

    BPE with byte fallback over ``▁``-marked words; ids 0..2 are ``<unk> <s> </s>``, 3..258 the
    byte pieces ``<0x00>``..``<0xFF>``, then learned merges, then fillers up to ``vocab_size``.
    The post-processor prepends ``<s>`` (Llama's ``add_bos_token``); there is no pad token.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<unk>", "<s>", "</s>"]
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    trainee = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    # Training splits at word starts (▁) so merges stay inside words, as SentencePiece's do;
    # isolates punctuation but the apostrophe (Llama writes "well." as "▁well", "."), and digits,
    # so none is ever merged (Llama writes " 42" as "▁", "4", "2").
    trainee.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
        pre_tokenizers.Split(Regex(r"[^\w\s'▁]"), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials + byte_pieces,
                                  show_progress=False)
    # Trained line by line, so "\n" never enters the vocabulary: like Llama, a newline is the
    # byte piece <0x0A> (id 13), a boundary no merge crosses. Only a text's first line gets the
    # leading "▁" (prepend_scheme "first"); a line after a newline starts without one.
    lines = [(" " + line if i == 0 else line) for text in texts
             for i, line in enumerate(text.split("\n")) if line]
    trainee.train_from_iterator(lines, trainer=trainer)
    vocab, merges = _trained_vocab_and_merges(trainee)
    fillers = gen.pseudo_words(vocab_size, set(vocab), prefix="▁")
    vocab = _pad_vocab(vocab, vocab_size, fillers)

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    # What transformers 5's LlamaTokenizer rebuilds from this file: no normalizer, Metaspace
    # without splitting, and a decoder that undoes ▁, byte pieces and the leading space.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", 1)])

    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): _added(s) for i, s in enumerate(specials)},
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": False,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    special_map = {k: {kk: v for kk, v in _added(s).items() if kk != "special"}
                   for k, s in (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}
    return tok, config, special_map


# Llama 3's pre-tokenizer split (tiktoken's cl100k-style pattern, digits in groups of 1-3).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def llama3_special_tokens() -> list[str]:
    """The 256 special tokens of Llama 3.1/3.2, in id order from 128000."""
    named = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>",
             6: "<|start_header_id|>", 7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>",
             10: "<|python_tag|>"}
    out, reserved = [], 0
    for i in range(256):
        if i in named:
            out.append(named[i])
        else:
            out.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return out


# Written for the stand-in in the Llama 3 convention (not copied from Meta's template, which also
# inserts a dated system preamble): BOS, an optional system turn, then every turn as
# <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>. A turn ends with <|eot_id|>,
# never with eos_token (<|end_of_text|>): the trap the real model sets.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim }}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)


def llama3_tokenizer(texts: list[str], gen: EnglishGenerator, regular: int = 128000):
    """A Llama-3-style tokenizer: ``(tokenizers.Tokenizer, tokenizer_config, special_map)``.

    Byte-level BPE (every byte is a piece, so any text round-trips) with Llama 3's split regex and
    ``ignore_merges``; ``regular`` ids then the 256 special tokens. The post-processor prepends
    ``<|begin_of_text|>``; eos is ``<|end_of_text|>``; no pad token; a Llama 3 chat template.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    def pipeline(tok):
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        return tok

    trainee = pipeline(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(vocab_size=regular, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    trainee.train_from_iterator(texts, trainer=trainer)
    vocab, merges = _trained_vocab_and_merges(trainee)
    fillers = gen.pseudo_words(regular, set(vocab), prefix="Ġ")  # Ġ is byte-level's space
    vocab = _pad_vocab(vocab, regular, fillers)

    tok = pipeline(Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True)))
    specials = llama3_special_tokens()
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    bos = specials[0]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1",
                                      special_tokens=[(bos, regular)]),
    ])
    config = {
        "added_tokens_decoder": {str(regular + i): _added(s) for i, s in enumerate(specials)},
        "bos_token": bos,
        "chat_template": LLAMA3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "eos_token": specials[1],
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    special_map = {k: {kk: v for kk, v in _added(s).items() if kk != "special"}
                   for k, s in (("bos_token", bos), ("eos_token", specials[1]))}
    return tok, config, special_map


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

# The real config.json of each repo (keys and values as published), and what the stand-in shrinks.
TINYLLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 5632,
    "max_position_embeddings": 2048,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 22,
    "num_key_value_heads": 4,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "transformers_version": "4.31.0.dev0",
    "use_cache": True,
    "vocab_size": 32000,
}
LLAMA32_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0",
    "use_cache": True,
    "vocab_size": 128256,
}

MODELS = {
    "TinyLlama/TinyLlama_v1.1": {
        "config": TINYLLAMA_CONFIG,
        "shrink": {"hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 4,
                   "num_key_value_heads": 2},
        # generation_config.json as TinyLlama's repos publish it (the keys that matter are the ids).
        "generation_config": {"bos_token_id": 1, "eos_token_id": 2, "max_length": 2048,
                              "pad_token_id": 0, "transformers_version": "4.31.0.dev0"},
        "tokenizer": llama2_tokenizer,
        "real_parameters": 1_100_048_384,
    },
    "meta-llama/Llama-3.2-1B": {
        "config": LLAMA32_CONFIG,
        "shrink": {"hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 8,
                   "num_key_value_heads": 2, "head_dim": 8},
        "generation_config": {"_from_model_config": True, "bos_token_id": 128000, "do_sample": True,
                              "eos_token_id": 128001, "temperature": 0.6, "top_p": 0.9,
                              "transformers_version": "4.45.0.dev0"},
        "tokenizer": llama3_tokenizer,
        "real_parameters": 1_235_814_400,
    },
}
DIM_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "torch_dtype")


def random_weights(config: dict, seed: int) -> dict:
    """Seeded random weights with the exact names and shapes ``LlamaForCausalLM(config)`` has.

    The model is built on the meta device (shapes only, no memory, no init time), then every
    tensor is drawn from N(0, initializer_range) (norms: 1), in the config's declared dtype.
    Tied models (``tie_word_embeddings``) store no ``lm_head.weight``, like the real checkpoint.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig.from_dict(config)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    dtype = getattr(torch, config["torch_dtype"])
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, param in sorted(model.state_dict().items()):
        if name == "lm_head.weight" and config["tie_word_embeddings"]:
            continue
        if name.endswith("norm.weight"):
            tensor = torch.ones(param.shape)
        else:
            tensor = torch.randn(param.shape, generator=gen) * config["initializer_range"]
        weights[name] = tensor.to(dtype).contiguous()
    return weights


def write_model(hub: Path, repo_id: str, spec: dict, texts: list[str], seed: int) -> dict:
    """Write one model repo into the hub cache; return its manifest entry."""
    from safetensors.torch import save_file

    snapshot, commit = fresh_snapshot(hub, "model", repo_id)
    config = {**spec["config"], **spec["shrink"]}
    write_json(snapshot / "config.json", config)
    write_json(snapshot / "generation_config.json", spec["generation_config"])
    weights = random_weights(config, seed)
    save_file(weights, str(snapshot / "model.safetensors"), metadata={"format": "pt"})

    tok, tok_config, special_map = spec["tokenizer"](texts, EnglishGenerator(seed))
    tok.save(str(snapshot / "tokenizer.json"))
    write_json(snapshot / "tokenizer_config.json", tok_config)
    write_json(snapshot / "special_tokens_map.json", special_map)
    n_params = sum(t.numel() for t in weights.values())
    return {
        "kind": "model", "repo_id": repo_id, "class": config["architectures"][0], "commit": commit,
        "path": str(snapshot.relative_to(hub.parent.parent)),  # relative to --out
        "real": {k: spec["config"][k] for k in DIM_KEYS if k in spec["config"]}
        | {"parameters": spec["real_parameters"]},
        "standin": {k: config[k] for k in DIM_KEYS if k in config} | {"parameters": n_params},
        "shrunk": sorted(spec["shrink"]),
        "tokenizer": {"class": tok_config["tokenizer_class"], "len": tok.get_vocab_size(with_added_tokens=True),
                      "bos": tok_config["bos_token"], "eos": tok_config["eos_token"], "pad": None,
                      "chat_template": "chat_template" in tok_config},
    }


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------

def alpaca_features():
    from datasets import Features, Value

    # The column order of the real alpaca_data_cleaned.json records.
    return Features({"output": Value("string"), "input": Value("string"), "instruction": Value("string")})


def ultrafeedback_features():
    from datasets import Features, List, Value

    turn = List({"content": Value("string"), "role": Value("string")})
    return Features({"chosen": turn, "rejected": turn, "score_chosen": Value("float64"),
                     "score_rejected": Value("float64")})


DATASETS = {
    "yahma/alpaca-cleaned": {"rows": {"train": 1500}, "real_rows": {"train": 51760},
                             "make": "instruction", "features": alpaca_features},
    "trl-lib/ultrafeedback_binarized": {"rows": {"train": 400, "test": 200},
                                        "real_rows": {"train": 62135, "test": 1000},
                                        "make": "preference", "features": ultrafeedback_features},
}


def write_dataset(hf_home: Path, repo_id: str, splits: dict[str, list[dict]], features) -> dict:
    """Write a dataset repo: parquet files in the hub cache, then the prepared Arrow cache from them.

    The Arrow cache is what ``load_dataset(repo_id)`` reads offline. It is written by a
    ``datasets`` builder given what the hub loader gives one for a repo (config ``default``,
    ``repo_id``, ``hash`` = the repo's commit), so ``download_and_prepare`` lays out the folder a
    first online load would have left: ``datasets/ORG___NAME/default/0.0.0/<commit>/`` with
    ``dataset_info.json`` and ``NAME-SPLIT.arrow``. (The library's ``Parquet`` builder itself
    cannot be used here: it insists its data files be ``hf://datasets/REPO@...`` URLs.)
    """
    import datasets
    import pyarrow.parquet as pq
    from datasets.builder import Key

    snapshot, commit = fresh_snapshot(hf_home / "hub", "dataset", repo_id)
    org, name = repo_id.split("/")
    datasets.disable_progress_bars()  # one line per stand-in is enough (build() turns them back on)
    files = {}
    for split, rows in splits.items():
        path = snapshot / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(exist_ok=True)
        datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))
        files[split] = path
    (snapshot / "README.md").write_text(
        f"# {repo_id} (ftlab stand-in)\n\nRandomly generated rows with the real dataset's schema; "
        "built by scripts/build_standins.py for offline rehearsal of the full profile.\n")

    cache = hf_home / "datasets"
    prepared = cache / f"{org}___{name}"
    if prepared.exists():
        shutil.rmtree(prepared)
    for lock in cache.glob(f"*{org}___{name}*.lock"):
        lock.unlink()

    class HubRepo(datasets.ArrowBasedBuilder):
        """The repo's parquet files, one split each, under the single config ``default``."""

        BUILDER_CONFIGS = [datasets.BuilderConfig(name="default")]

        def _info(self):
            return datasets.DatasetInfo(features=features)

        def _split_generators(self, dl_manager):
            return [datasets.SplitGenerator(name=split, gen_kwargs={"path": path})
                    for split, path in files.items()]

        def _generate_tables(self, path):
            yield Key(0, 0), pq.read_table(path)

    builder = HubRepo(cache_dir=str(cache), dataset_name=name, repo_id=repo_id, hash=commit,
                      config_name="default")
    builder.download_and_prepare()
    return {
        "kind": "dataset", "repo_id": repo_id, "class": "datasets.Dataset", "commit": commit,
        "path": str(Path(builder.cache_dir).relative_to(hf_home.parent)),  # relative to --out
        "rows": {split: len(rows) for split, rows in splits.items()},
        "columns": {col: str(feat) for col, feat in features.items()},
    }


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------

def build(out: Path, log=print) -> dict:
    """Write every language stand-in under ``out/hf`` (HF_HOME); return ``{repo_id: manifest entry}``.

    ``log`` gets one line per stand-in (``print`` by default). Rebuilding replaces each stand-in
    in place and writes identical bytes.
    """
    out = Path(out)
    hf_home = out / "hf"
    (hf_home / "hub").mkdir(parents=True, exist_ok=True)
    (hf_home / "datasets").mkdir(parents=True, exist_ok=True)
    manifest = {}

    start = time.perf_counter()
    gen = EnglishGenerator(SEED)
    data = {}
    for repo_id, spec in DATASETS.items():
        make = getattr(gen, spec["make"])
        data[repo_id] = {split: [make() for _ in range(n)] for split, n in spec["rows"].items()}
    # The tokenizers learn from the stand-in datasets' text plus more of the same generator's.
    texts = EnglishGenerator(SEED + 1).corpus(3000)
    for rows in data["yahma/alpaca-cleaned"].values():
        texts += ["\n".join(v for v in (r["instruction"], r["input"], r["output"]) if v) for r in rows]
    for rows in data["trl-lib/ultrafeedback_binarized"].values():
        texts += [f"{r['chosen'][0]['content']}\n{r['chosen'][1]['content']}\n{r['rejected'][1]['content']}"
                  for r in rows]
    log(f"  generated text: {len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f} M characters "
        f"({time.perf_counter() - start:.1f} s)")

    for i, (repo_id, spec) in enumerate(MODELS.items()):
        t0 = time.perf_counter()
        entry = write_model(hf_home / "hub", repo_id, spec, texts, SEED + 10 + i)
        manifest[repo_id] = entry
        s = entry["standin"]
        log(f"  model   {repo_id:34s} {entry['class']}: {s['num_hidden_layers']} layers, hidden "
            f"{s['hidden_size']}, vocab {s['vocab_size']}, {s['parameters'] / 1e6:.1f} M params "
            f"{s['torch_dtype']}; tokenizer len {entry['tokenizer']['len']} "
            f"({time.perf_counter() - t0:.1f} s)")

    import datasets

    bars = datasets.is_progress_bar_enabled()
    for repo_id, spec in DATASETS.items():
        t0 = time.perf_counter()
        try:
            entry = write_dataset(hf_home, repo_id, data[repo_id], spec["features"]())
        finally:
            if bars:
                datasets.enable_progress_bars()
        entry["real_rows"] = spec["real_rows"]
        manifest[repo_id] = entry
        rows = ", ".join(f"{k} {v}" for k, v in entry["rows"].items())
        log(f"  dataset {repo_id:34s} {rows}; columns {', '.join(entry['columns'])} "
            f"({time.perf_counter() - t0:.1f} s)")
    return manifest


if __name__ == "__main__":  # pragma: no cover - the driver is scripts/build_standins.py
    raise SystemExit("Run scripts/build_standins.py (it calls build() and writes env.sh and the manifest).")
