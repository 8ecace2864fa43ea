from node.twin.tokens import EOS, MAX_MESSAGE_TOKENS, MAX_TOKEN_CHARS, is_word, message_tokens, tokenize


def test_lowercased_words_punctuation_runs_and_eos() -> None:
    assert tokenize("Hello, World... It\u2019s 2018!!") == ["hello", ",", "world", "...", "it's", "2018", "!!"]
    assert message_tokens("Hi") == ["hi", EOS]
    assert message_tokens("") == [EOS]


def test_tokens_are_bounded() -> None:
    assert tokenize("x" * 500) == ["x" * MAX_TOKEN_CHARS]
    assert len(tokenize("a " * 10_000)) == MAX_MESSAGE_TOKENS


def test_is_word() -> None:
    assert is_word("don't") and is_word("42")
    assert not is_word("?") and not is_word(EOS)
