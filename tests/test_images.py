import io

from PIL import Image

from app.generation.generators.images import ImagesGenerator, render_png


class Context:
    def __init__(self):
        self.reports = []
        self.previews = []

    def preview(self, data, content_type="image/png"):
        self.previews.append((content_type, Image.open(io.BytesIO(data)).size))

    def progress(self, stage, percent, message="", *, step=None, total=None):
        self.reports.append(percent)

    def check_cancelled(self):
        pass


def test_rendering_is_deterministic_and_varies_with_inputs():
    first = render_png("a cat", 1, 0, 96, 64)
    assert first == render_png("a cat", 1, 0, 96, 64)
    assert first != render_png("a cat", 2, 0, 96, 64)
    assert first != render_png("a dog", 1, 0, 96, 64)
    assert first != render_png("a cat", 1, 1, 96, 64)
    image = Image.open(io.BytesIO(first))
    assert (image.format, image.size, image.mode) == ("PNG", (96, 64), "RGB")
    assert len(image.getcolors(maxcolors=100_000) or []) > 100  # a real picture, not a flat fill


def test_run_reports_progress_per_image_and_names_files():
    context = Context()
    params, errors = ImagesGenerator().validate(
        {"prompt": "ü 🎨", "count": 3, "width": 64, "height": 64, "seed": 5}
    )
    assert errors == {}
    files = list(ImagesGenerator().run(params, context))
    assert [f.name for f in files] == ["image-01.png", "image-02.png", "image-03.png"]
    assert context.reports == sorted(context.reports) and context.reports[-1] == 100
    assert len(context.reports) == 4


def test_validation_fills_defaults_and_a_seed():
    params, errors = ImagesGenerator().validate({"prompt": "x"})
    assert errors == {}
    assert (params["count"], params["width"], params["height"]) == (4, 512, 512)
    assert isinstance(params["seed"], int)


def test_validation_returns_field_errors_instead_of_raising():
    _, errors = ImagesGenerator().validate(
        {"prompt": "a\x00b", "count": True, "width": 63, "height": 1025, "seed": 2**63, "x": 1}
    )
    assert set(errors) == {"prompt", "count", "width", "height", "seed", "x"}
    _, errors = ImagesGenerator().validate({"prompt": "x" * 501})
    assert "prompt" in errors


def test_each_image_is_previewed_coarse_before_it_renders():
    context = Context()
    params = {"prompt": "p", "count": 3, "width": 256, "height": 128, "seed": 1}
    files = list(ImagesGenerator().run(params, context))
    assert len(files) == 3
    assert context.previews == [("image/png", (32, 16))] * 3
