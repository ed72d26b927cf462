from lion_core.llm.requests import ChatRequest


def _req(**kw):
    return ChatRequest.of([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}], **kw)


def test_key_is_stable_and_ignores_the_tag():
    assert _req(tag="a").key("e", "m") == _req(tag="b").key("e", "m")
    assert len(_req().key("e", "m")) == 64


def test_key_changes_with_everything_that_changes_the_answer():
    base = _req(temperature=0.7, max_tokens=10).key("e", "m")
    variants = [
        _req(temperature=0.2, max_tokens=10).key("e", "m"),
        _req(temperature=0.7, max_tokens=11).key("e", "m"),
        _req(temperature=0.7, top_p=0.9, max_tokens=10).key("e", "m"),
        _req(temperature=0.7, max_tokens=10, sample_index=1).key("e", "m"),
        _req(temperature=0.7, max_tokens=10).key("other-endpoint", "m"),
        _req(temperature=0.7, max_tokens=10).key("e", "other-model"),
        ChatRequest.of([("user", "Hi")], temperature=0.7, max_tokens=10).key("e", "m"),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


def test_tuple_and_dict_messages_are_the_same_request():
    assert ChatRequest.of([("user", "x")]) == ChatRequest.of([{"role": "user", "content": "x"}])
    assert ChatRequest.of([("user", "x")]).api_messages() == [{"role": "user", "content": "x"}]
