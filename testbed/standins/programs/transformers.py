"""sdinfra STAND-IN for Hugging Face's transformers in the stand-in python:3.10-slim-bookworm
image (TEST ONLY): roles/webui/templates/Dockerfile.j2 fetches the CLIP tokenizer and text
encoder config with CLIPTokenizer.from_pretrained and CLIPTextConfig.from_pretrained; the
stand-in web UI reads neither, so nothing is fetched."""


class _Pretrained:
    @classmethod
    def from_pretrained(cls, name, revision=None, **_):
        print(f"sdinfra stand-in transformers: {cls.__name__} {name}@{revision}: nothing fetched")
        return cls()


class CLIPTokenizer(_Pretrained):
    pass


class CLIPTextConfig(_Pretrained):
    pass
