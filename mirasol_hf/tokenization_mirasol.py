"""A small word-piece tokenizer trained from a model's own text, for models trained here from scratch.

Models built from a pretrained language model use that model's tokenizer instead: the processor accepts any fast
tokenizer. Nothing here downloads anything.
"""

import string
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast


# Listed in id order: pad, bos, eos, unk get ids 0, 1, 2, 3, the text decoder config's defaults.
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)

DEFAULT_VOCAB_SIZE = 1000
# Seeded into the vocabulary so that any ASCII text encodes without <unk>, even characters the texts never use.
BASE_ALPHABET = string.ascii_lowercase + string.digits + string.punctuation
CONTINUING_SUBWORD_PREFIX = "##"


def build_tokenizer(
    texts: Iterable[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    min_frequency: int = 1,
    lowercase: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a word-piece tokenizer on `texts` (questions, answers, any text the model will see).

    Words are split on whitespace and punctuation; unseen words fall back to sub-words and single characters (all
    of ASCII is in the vocabulary), so only non-ASCII characters absent from `texts` become `<unk>`. Encoding adds
    `<s>` in front; the processor appends `</s>` after answers. `pad`, `bos`, `eos`, `unk` are always ids 0-3.

    The `tokenizers` trainer breaks frequency ties in no fixed order, so two calls on the same texts may give
    different vocabularies: build the tokenizer once and save it with the checkpoint (the processor does), and in
    multi-process training build it on one process and share it (`mirasol_hf.training.build_shared_tokenizer`).
    """
    texts = list(texts)
    if not texts:
        raise ValueError("build_tokenizer needs at least one training text")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")

    backend = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN, continuing_subword_prefix=CONTINUING_SUBWORD_PREFIX))
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix=CONTINUING_SUBWORD_PREFIX)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix=CONTINUING_SUBWORD_PREFIX,
        initial_alphabet=list(BASE_ALPHABET + ("" if lowercase else string.ascii_uppercase)),
    )
    backend.train_from_iterator(texts, trainer=trainer)
    bos_id = backend.token_to_id(BOS_TOKEN)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
    )
