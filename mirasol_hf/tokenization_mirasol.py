"""A small word-piece tokenizer trained from a model's own text, for models trained here from scratch.

Models built from a pretrained language model use that model's tokenizer instead: the processor accepts any fast
tokenizer. Nothing here downloads anything.
"""

import string
from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
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
    """A word-piece tokenizer for `texts` (questions, answers, any text the model will see).

    Words are split on whitespace and punctuation. The vocabulary is the special tokens, every ASCII character (alone
    and as a `##` continuation), then the words of `texts` seen at least `min_frequency` times, most frequent first
    (ties alphabetical), up to `vocab_size` entries in all: the same texts always give the same tokenizer. A word
    outside the vocabulary is split greedily into the longest known pieces, down to single characters, so only
    non-ASCII characters absent from `texts` become `<unk>`. Encoding adds `<s>` in front; the processor appends
    `</s>` after answers. `pad`, `bos`, `eos`, `unk` are always ids 0-3.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("build_tokenizer needs at least one training text")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")

    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    normalizer = normalizers.Sequence(steps)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = Counter(
        word for text in texts for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    alphabet = BASE_ALPHABET + ("" if lowercase else string.ascii_uppercase)
    characters = sorted(set(alphabet) | {char for word in counts for char in word})
    vocabulary = dict.fromkeys(
        [*SPECIAL_TOKENS, *characters, *(CONTINUING_SUBWORD_PREFIX + char for char in characters)]
    )
    words = sorted((word for word, count in counts.items() if count >= min_frequency), key=lambda w: (-counts[w], w))
    for word in words:
        if len(vocabulary) >= vocab_size:
            break
        vocabulary.setdefault(word)
    backend = Tokenizer(
        models.WordPiece(
            vocab={token: index for index, token in enumerate(vocabulary)},
            unk_token=UNK_TOKEN,
            continuing_subword_prefix=CONTINUING_SUBWORD_PREFIX,
        )
    )
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.WordPiece(prefix=CONTINUING_SUBWORD_PREFIX)
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
