"""fit_to_input: normalisation and the layouts models ask for, or a one-line error naming both shapes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nestc.data import Dataset, fit_to_input
from nestc.errors import DataError, OptionError


def _images(channels: int = 1, size: int = 28, name: str = "fashion-mnist") -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.random((6, channels, size, size), dtype=np.float32)
    return Dataset(name, x, np.arange(6) % 2, x[:2].copy(), np.array([0, 1]), 2, (0.5,) * channels, (0.25,) * channels)


@pytest.mark.parametrize(
    ("shape", "out"),
    [
        (["N", 784], (6, 784)),
        ([None, 1, 28, 28], (6, 1, 28, 28)),
        (["batch", 28, 28], (6, 28, 28)),
        ([-1, 28, 28, 1], (6, 28, 28, 1)),
        ([1, "C", "H", "W"], (6, 1, 28, 28)),
    ],
)
def test_layouts(shape: list, out: tuple[int, ...]) -> None:
    ds = _images()
    fitted = fit_to_input(ds, shape)
    assert fitted.x_train.shape == out and fitted.x_test.shape == (2, *out[1:])
    assert fitted.x_train.dtype == np.float32 and fitted.x_train.flags.c_contiguous
    expected = ((ds.x_train - 0.5) / 0.25).reshape(6, 28, 28)
    np.testing.assert_allclose(fitted.x_train.reshape(6, 28, 28), expected, rtol=1e-6)
    assert ds.x_train.shape == (6, 1, 28, 28)  # the input data set is left alone


def test_channels_last_moves_the_channel_axis() -> None:
    fitted = fit_to_input(_images(channels=3, size=4), ["N", 4, 4, 3], mean=(0, 0, 0), std=(1, 1, 1))
    ds = _images(channels=3, size=4)
    np.testing.assert_array_equal(fitted.x_train[0, 1, 2], ds.x_train[0, :, 1, 2])


def test_per_channel_mean_and_std() -> None:
    ds = _images(channels=3, size=4)
    fitted = fit_to_input(ds, [None, 3, 4, 4], mean=(0.0, 0.5, 1.0), std=(1.0, 2.0, 4.0))
    for c, (m, s) in enumerate(((0.0, 1.0), (0.5, 2.0), (1.0, 4.0))):
        np.testing.assert_allclose(fitted.x_train[:, c], (ds.x_train[:, c] - m) / s, rtol=1e-6)
    assert fitted.mean == (0.0, 0.5, 1.0) and fitted.std == (1.0, 2.0, 4.0)


def test_flat_data_is_reshaped_for_an_image_model() -> None:
    x = np.arange(2 * 784, dtype=np.float32).reshape(2, 784)
    ds = Dataset("flat", x, None, x, None, None, (0.0,), (1.0,))
    assert fit_to_input(ds, ["N", 1, 28, 28]).x_train[1, 0, 0, 1] == 785.0


def test_shape_mismatch_names_both_shapes_and_the_model() -> None:
    with pytest.raises(DataError) as err:
        fit_to_input(_images(), ["N", 3, 32, 32])
    assert str(err.value) == "data 'fashion-mnist' has samples of shape (1, 28, 28); model input expects [N, 3, 32, 32]"
    with pytest.raises(DataError, match=r"lenet\.onnx input expects \[N, 100\]"):
        fit_to_input(_images(), [None, 100], model_label="lenet.onnx")


@pytest.mark.parametrize("shape", [["N", 3, 28, 28], ["N", 28, 28, 3], ["N", 3, "H", "W"]])
def test_grey_data_is_not_replicated_for_a_colour_model(shape: list) -> None:
    with pytest.raises(DataError, match=r"1-channel samples .* does not replicate"):
        fit_to_input(_images(), shape)


@pytest.mark.parametrize(
    ("mean", "std", "problem"),
    [
        ((0.1, 0.2), None, "mean has 2 value"),
        (None, (0.1, 0.2, 0.3, 0.4), "std has 4 value"),
        (None, (0.0,), "std must be positive"),
        ((float("nan"),), None, "give 1 finite value or 3"),
    ],
)
def test_bad_normalisation_is_an_option_error(mean: tuple | None, std: tuple | None, problem: str) -> None:
    with pytest.raises(OptionError, match=problem):
        fit_to_input(_images(channels=3, size=4), ["N", 3, 4, 4], mean=mean, std=std)


def test_wrong_channel_count_message_shows_the_values_as_given() -> None:
    """The values as typed, not their float32 expansions, and no "1 or 1" for grey images."""
    with pytest.raises(OptionError) as err:
        fit_to_input(_images(), ["N", 1, 28, 28], mean=(0.485, 0.456, 0.406), std=(0.5,))
    assert str(err.value) == ("--mean has 3 value(s) (0.485, 0.456, 0.406); data 'fashion-mnist' has 1 channel(s): "
                              "give 1 finite value")


def test_normalisation_candidates_per_layout() -> None:
    """Grey images: the data set's statistics, those of the images read where they differ, [0, 1], [-1, 1],
    then the stored [0, 255] pixels; RGB adds ImageNet's before those; duplicates appear once; images not at
    the [0, 1] scale have no raw-pixel candidate."""
    from nestc.data.dataset import channel_stats
    from nestc.model_data import normalisation_candidates

    pixels = ((0.0,), (1 / 255,))
    published = _images()
    own = channel_stats(published.x_train)
    assert abs(own[1][0] - 0.25) > 0.01, "uniform pixels have std 0.29, not the 0.25 the data set states"
    grey = normalisation_candidates(published)
    assert grey == [((0.5,), (0.25,)), own, ((0.0,), (1.0,)), ((0.5,), (0.5,)), pixels]
    rgb = normalisation_candidates(_images(channels=3))
    assert rgb[-2:] == [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.0,) * 3, (1 / 255,) * 3)]
    assert len(rgb) == 6
    halves = dataclasses.replace(_images(), mean=(0.5,), std=(0.5,))
    assert normalisation_candidates(halves)[2:] == [((0.0,), (1.0,)), pixels]
    stated = dataclasses.replace(_images(), mean=(round(own[0][0], 3),), std=(round(own[1][0], 3),))
    assert normalisation_candidates(stated)[:2] == [(stated.mean, stated.std), ((0.0,), (1.0,))]
    scaled = _images()
    scaled = dataclasses.replace(scaled, x_test=scaled.x_test * 255)
    assert pixels not in normalisation_candidates(scaled)


def test_smaller_images_are_padded_in_the_centre_with_background() -> None:
    """28x28 images meet a 32x32 model the way LeNet-5 met MNIST: centred, zero (raw) background."""
    ds = _images()
    for shape, to_nchw in ((["N", 1, 32, 32], lambda a: a), (["N", 32, 32, 1], lambda a: a.transpose(0, 3, 1, 2))):
        fitted = fit_to_input(ds, shape)
        x = to_nchw(fitted.x_train)
        assert x.shape == (6, 1, 32, 32) and fitted.input_fit == "28x28 -> 32x32 (pad)"
        np.testing.assert_allclose(x[:, :, 2:30, 2:30], (ds.x_train - 0.5) / 0.25, rtol=1e-6)
        border = np.ones((32, 32), bool)
        border[2:30, 2:30] = False
        assert (x[:, :, border] == (0 - 0.5) / 0.25).all()


def test_larger_images_are_resized_by_default_and_cropped_on_request() -> None:
    ds = dataclasses.replace(_images(), mean=(0.0,), std=(1.0,))
    resized = fit_to_input(ds, ["N", 1, 14, 14])
    assert resized.input_fit == "28x28 -> 14x14 (resize)" and resized.x_train.shape == (6, 1, 14, 14)
    # a linear ramp is sampled at the new pixel centres (away from the edges, where the filter is clamped)
    ramp = np.broadcast_to(np.arange(28, dtype=np.float32), (6, 1, 28, 28)) / 28
    smooth = fit_to_input(dataclasses.replace(ds, x_train=np.ascontiguousarray(ramp)), ["N", 1, 14, 14])
    np.testing.assert_allclose(smooth.x_train[0, 0, 7, 1:-1], ramp[0, 0, 0].reshape(14, 2).mean(1)[1:-1], atol=1e-5)
    cropped = fit_to_input(ds, ["N", 1, 24, 24], spatial="pad")
    np.testing.assert_array_equal(cropped.x_train, ds.x_train[:, :, 2:26, 2:26])
    assert cropped.input_fit == "28x28 -> 24x24 (pad)"


def test_unknown_spatial_fit_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="spatial fit 'stretch': use one of pad, resize"):
        fit_to_input(_images(), ["N", 1, 32, 32], spatial="stretch")


@pytest.mark.parametrize(("accuracy", "classes", "trained"), [(0.21, 10, True), (0.19, 10, False), (0.76, 2, True),
                                                             (0.74, 2, False), (0.68, 3, True), (0.66, 3, False)])
def test_a_trained_classifier_is_told_apart_from_chance(accuracy: float, classes: int, trained: bool) -> None:
    from nestc.model_data import is_trained

    assert is_trained(accuracy, classes) == trained
