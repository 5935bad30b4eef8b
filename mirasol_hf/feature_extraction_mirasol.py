"""Audio -> log-mel spectrogram slices, one per chunk time window."""

import numpy as np
import scipy.sparse
import torch
from transformers.audio_utils import mel_filter_bank, window_function
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature


DEFAULT_NUM_MEL_BINS = 128
DEFAULT_SAMPLING_RATE = 16000
DEFAULT_AUDIO_FRAMES_PER_CHUNK = 128
DEFAULT_HOP_LENGTH = 160  # 10 ms at 16 kHz
DEFAULT_WINDOW_LENGTH = 400  # 25 ms at 16 kHz
DEFAULT_MEL_FLOOR = 1e-10
# A chunk whose time window is less than half covered by the audio track counts as having no audio.
DEFAULT_MIN_CHUNK_AUDIO_COVERAGE = 0.5


class MirasolFeatureExtractor(SequenceFeatureExtractor):
    """Log-mel features of a waveform, cut into the time windows of the video chunks.

    The waveform is turned into a mel power spectrogram at a fine hop (10 ms) whose frames are centred at multiples
    of the hop from time 0 of the windows' clock (the waveform's first sample sits at its start time rounded to a
    sample), so a chunk's features depend only on the audio around its window, not on what else was given (a chunk
    given alone with `(window_length + hop_length) / 2` samples of audio on each side of its window, as a live
    source gives it, has its features in the whole clip, within float32 rounding); each chunk window is then
    split into `audio_frames_per_chunk` equal time bins and each bin takes the mean mel power over its time span
    (exact time-weighted averaging, so long windows are averaged and short ones repeat frames), followed by the
    natural log. A window mostly outside the audio track is masked out in `audio_chunk_mask` and its features are
    `padding_value`.

    Args:
        num_mel_bins: mel filters (the model's `audio_config.num_mel_bins`).
        sampling_rate: rate of the waveforms it accepts, Hz.
        audio_frames_per_chunk: log-mel frames per chunk (the model's `audio_frames_per_chunk`).
        hop_length, window_length: STFT hop and Hann window, in samples.
        min_frequency, max_frequency: mel filter range in Hz (`max_frequency` None: half the sampling rate).
        mel_floor: mel power floor before the log.
        min_chunk_audio_coverage: fraction of a chunk's window the audio must cover for the chunk to count.
        feature_mean, feature_std: when both are set, the log-mel of real chunks is standardised to
            `(log_mel - feature_mean) / feature_std` (as AST does with its data set's statistics), so the audio
            encoder sees values around 0 instead of around -10; None (the default) leaves the natural log as it is.
            `compute_normalization` measures them on a sample of your audio.
    """

    model_input_names = ["input_features", "audio_chunk_mask"]

    def __init__(
        self,
        num_mel_bins: int = DEFAULT_NUM_MEL_BINS,
        sampling_rate: int = DEFAULT_SAMPLING_RATE,
        audio_frames_per_chunk: int = DEFAULT_AUDIO_FRAMES_PER_CHUNK,
        hop_length: int = DEFAULT_HOP_LENGTH,
        window_length: int = DEFAULT_WINDOW_LENGTH,
        min_frequency: float = 0.0,
        max_frequency: float | None = None,
        mel_floor: float = DEFAULT_MEL_FLOOR,
        min_chunk_audio_coverage: float = DEFAULT_MIN_CHUNK_AUDIO_COVERAGE,
        padding_value: float = 0.0,
        feature_mean: float | None = None,
        feature_std: float | None = None,
        **kwargs,
    ):
        kwargs.pop("feature_size", None)  # saved by the parent class; always num_mel_bins here
        super().__init__(feature_size=num_mel_bins, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        self.num_mel_bins = num_mel_bins
        self.audio_frames_per_chunk = audio_frames_per_chunk
        self.hop_length = hop_length
        self.window_length = window_length
        self.min_frequency = min_frequency
        self.max_frequency = max_frequency
        self.mel_floor = mel_floor
        self.min_chunk_audio_coverage = min_chunk_audio_coverage
        if not 0 < hop_length <= window_length:
            raise ValueError(f"hop_length must be in 1..window_length ({window_length}), got {hop_length}")
        if (feature_mean is None) != (feature_std is None):
            raise ValueError("feature_mean and feature_std must be given together (or neither)")
        if feature_std is not None and not feature_std > 0:
            raise ValueError(f"feature_std must be > 0, got {feature_std}")
        self.feature_mean = None if feature_mean is None else float(feature_mean)
        self.feature_std = None if feature_std is None else float(feature_std)
        # Not serialized (FeatureExtractionMixin.to_dict drops both): rebuilt from the fields above.
        self.window = window_function(window_length, "hann")
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=window_length // 2 + 1,
            num_mel_filters=num_mel_bins,
            min_frequency=min_frequency,
            max_frequency=max_frequency if max_frequency is not None else sampling_rate / 2,
            sampling_rate=sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        )

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        chunk_windows=None,
        num_chunks: int | None = None,
        waveform_start_times=None,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        """Features for one waveform or a batch.

        Args:
            raw_speech: a `(samples,)` float waveform, None (no audio track), or a list of those.
            sampling_rate: must equal `self.sampling_rate` when given (the media reader resamples).
            chunk_windows: `(T, 2)` start/end seconds of each chunk, or a list of them (one per waveform).
                When None, each waveform is cut into `num_chunks` (default 1) equal windows.
            waveform_start_times: time in seconds of each waveform's first sample on the windows' clock.
            return_tensors: "pt", "np" or None.

        Returns:
            `input_features` `(B, num_mel_bins, T * audio_frames_per_chunk)` float32 and `audio_chunk_mask`
            `(B, T)` bool.
        """
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"audio at {sampling_rate} Hz given to a feature extractor for {self.sampling_rate} Hz: resample first"
            )
        batched = isinstance(raw_speech, (list, tuple))
        waveforms = list(raw_speech) if batched else [raw_speech]
        if chunk_windows is None:
            chunk_windows = [self._equal_windows(waveform, num_chunks or 1) for waveform in waveforms]
        elif not batched:
            chunk_windows = [chunk_windows]
        if waveform_start_times is None:
            waveform_start_times = [0.0] * len(waveforms)
        elif not batched:
            waveform_start_times = [waveform_start_times]
        if not len(waveforms) == len(chunk_windows) == len(waveform_start_times):
            raise ValueError(
                f"got {len(waveforms)} waveforms, {len(chunk_windows)} chunk_windows and "
                f"{len(waveform_start_times)} waveform_start_times"
            )

        features, masks = [], []
        for waveform, windows, start in zip(waveforms, chunk_windows, waveform_start_times):
            item_features, item_mask = self._chunk_features(waveform, np.asarray(windows, np.float64), float(start))
            features.append(item_features)
            masks.append(item_mask)
        if len({mask.shape for mask in masks}) > 1:
            raise ValueError("every item of a batch needs the same number of chunks")
        data = {"input_features": np.stack(features), "audio_chunk_mask": np.stack(masks)}
        return BatchFeature(data, tensor_type=return_tensors)

    def _equal_windows(self, waveform, num_chunks: int) -> np.ndarray:
        duration = 0.0 if waveform is None else len(waveform) / self.sampling_rate
        edges = np.linspace(0.0, duration, num_chunks + 1)
        return np.stack([edges[:-1], edges[1:]], axis=1)  # (T, 2)

    def _chunk_features(self, waveform, windows: np.ndarray, start_time: float) -> tuple[np.ndarray, np.ndarray]:
        """`(num_mel_bins, T * A)` log-mel and `(T,)` mask for one waveform and its `(T, 2)` windows."""
        if windows.ndim != 2 or windows.shape[1] != 2:
            raise ValueError(f"chunk_windows must have shape (num_chunks, 2), got {windows.shape}")
        num_chunks, bins = len(windows), self.audio_frames_per_chunk
        features = np.full((self.num_mel_bins, num_chunks * bins), self.padding_value, np.float32)
        mask = np.zeros(num_chunks, dtype=bool)
        if waveform is None:
            return features, mask
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim != 1:
            raise ValueError(f"waveform must be mono (samples,), got shape {waveform.shape}")
        if len(waveform) == 0:
            return features, mask

        # The spectrogram covers only the samples [first, last) the windows need (zeros outside them).
        offset = self._sample_offset(start_time)
        first, last = self._sample_span(windows, offset)
        first = min(first, len(waveform))
        last = max(min(len(waveform), last), first)
        if last == first:
            return features, mask
        frames = self._frame_range(first, last, offset)
        begin = self._frame_start_sample(frames.start, offset)  # waveform index of frame `frames.start`'s first sample
        samples = np.zeros((len(frames) - 1) * self.hop_length + self.window_length, np.float32)
        copied = slice(max(first, begin), min(last, begin + len(samples)))
        samples[copied.start - begin : copied.stop - begin] = waveform[copied]
        mel_power = self._mel_power(samples)  # (frames, num_mel_bins)
        frame_edges = self._frame_edges(frames, first, last, offset)  # (frames + 1,), seconds on the windows' clock

        bin_edges = self._bin_edges(windows, frame_edges[0], frame_edges[-1])  # (T, A + 1)
        averaging = self._bin_averaging(frame_edges, bin_edges[:, :-1].ravel(), bin_edges[:, 1:].ravel())
        mean_power = averaging @ mel_power  # (T * A, mels)
        mean_power = mean_power.reshape(num_chunks, bins, self.num_mel_bins)  # (T * A, mels) -> (T, A, mels)
        return self._log_mel_chunks(mean_power, np.diff(bin_edges, axis=1), windows)

    def _sample_offset(self, start_time: float) -> int:
        """Sample index on the windows' clock (sample n at n / sampling_rate seconds) of the first sample of a
        waveform starting at `start_time`: the one place where a start time is rounded to samples."""
        return int(round(start_time * self.sampling_rate))

    def _sample_span(self, windows: np.ndarray, offset: int) -> tuple[int, int]:
        """Waveform samples `[first, last)` whose spectrogram the `(T, 2)` windows (seconds on the clock) need: one
        STFT window beyond them on each side, before cutting to the waveform's length; `offset`: `_sample_offset`."""
        first = max(0, int(np.floor(windows.min() * self.sampling_rate)) - self.window_length - offset)
        last = int(np.ceil(windows.max() * self.sampling_rate)) + self.window_length - offset
        return first, last

    def _frame_range(self, first: int, last: int, offset: int) -> range:
        """The STFT frames for waveform samples `[first, last)`: frame k is centred on clock sample k * hop and stands
        for the clock samples nearest to its centre, [k * hop - hop/2, k * hop + hop/2); from the frame holding
        `first` to the one holding `last - 1`."""
        hop = self.hop_length
        return range((2 * (first + offset) + hop) // (2 * hop), (2 * (last - 1 + offset) + hop) // (2 * hop) + 1)

    def _frame_start_sample(self, frame: int, offset: int) -> int:
        """Waveform index of the first sample under STFT frame `frame`'s window (centred on clock sample frame * hop,
        as a centred STFT centres it)."""
        return frame * self.hop_length - self.window_length // 2 - offset

    def _frame_edges(self, frames: range, first: int, last: int, offset: int) -> np.ndarray:
        """`(len(frames) + 1,)` edges in seconds on the clock of STFT frames `frames` (see `_frame_range`), cut to
        the samples `[first, last)` present."""
        edges = (np.arange(frames.start, frames.stop + 1) - 0.5) * self.hop_length  # clock samples
        return np.clip(edges, first + offset, last + offset) / self.sampling_rate

    def _bin_edges(self, windows: np.ndarray, audio_start: float, audio_end: float) -> np.ndarray:
        """`(T, A + 1)` edges of each window's equal time bins, cut to the audio's span `[audio_start, audio_end]`."""
        fractions = np.linspace(0.0, 1.0, self.audio_frames_per_chunk + 1)
        bin_edges = windows[:, :1] + (windows[:, 1:] - windows[:, :1]) * fractions[None, :]  # (T, A + 1)
        return np.clip(bin_edges, audio_start, audio_end)  # the audio-covered part of each bin

    def _log_mel_chunks(self, mean_power: np.ndarray, widths: np.ndarray, windows: np.ndarray):
        """`(mels, T * A)` features and `(T,)` mask from each bin's `(T, A, mels)` mean mel power and the `(T, A)`
        audio-covered widths of the bins of `(T, 2)` windows."""
        num_chunks, bins = widths.shape
        has_audio = widths > 0
        log_mel = np.log(np.maximum(mean_power, self.mel_floor))
        if self.feature_mean is not None:
            log_mel = (log_mel - self.feature_mean) / self.feature_std
        log_mel = np.where(has_audio[:, :, None], log_mel, self.padding_value)
        features = np.ascontiguousarray(
            log_mel.reshape(num_chunks * bins, self.num_mel_bins).T, dtype=np.float32
        )  # (T, A, mels) -> (mels, T * A)

        window_lengths = windows[:, 1] - windows[:, 0]
        coverage = widths.sum(axis=1) / np.where(window_lengths > 0, window_lengths, 1.0)
        mask = (window_lengths > 0) & (coverage >= self.min_chunk_audio_coverage)
        # A masked chunk carries no features at all, never partial audio that looks like silence.
        features.reshape(self.num_mel_bins, num_chunks, bins)[:, ~mask] = self.padding_value
        return features, mask

    def accumulator(self, chunk_windows, waveform_start_time: float | None = None) -> "ChunkLogMelAccumulator":
        """A `ChunkLogMelAccumulator` for the `(T, 2)` `chunk_windows`: the same features as `_chunk_features`,
        from a waveform given block by block."""
        return ChunkLogMelAccumulator(self, chunk_windows, waveform_start_time)

    @staticmethod
    def _bin_averaging(
        frame_edges: np.ndarray, starts: np.ndarray, ends: np.ndarray, normalize: bool = True, dtype=np.float32
    ) -> scipy.sparse.csr_array:
        """Sparse `(bins, frames)` matrix whose row b averages the frames over [starts[b], ends[b]), each frame
        weighted by the time it shares with the bin (an empty bin's row is zero); `normalize=False`: the shared
        times themselves (seconds), whose sums over blocks of frames are divided by the bins' widths at the end."""
        num_frames = len(frame_edges) - 1
        first_frame = np.clip(np.searchsorted(frame_edges, starts, side="right") - 1, 0, num_frames - 1)
        last_frame = np.clip(np.searchsorted(frame_edges, ends, side="left") - 1, 0, num_frames - 1)
        counts = np.maximum(last_frame - first_frame + 1, 0)  # frames each bin touches
        row_starts = np.concatenate([[0], np.cumsum(counts)])
        rows = np.repeat(np.arange(len(starts)), counts)  # (nnz,)
        frames = first_frame[rows] + np.arange(row_starts[-1]) - row_starts[rows]  # (nnz,)
        overlap = np.minimum(ends[rows], frame_edges[frames + 1]) - np.maximum(starts[rows], frame_edges[frames])
        widths = ends - starts
        weights = np.maximum(overlap, 0.0)
        if normalize:
            weights /= np.where(widths > 0, widths, 1.0)[rows]
        return scipy.sparse.csr_array((weights.astype(dtype), frames, row_starts), shape=(len(starts), num_frames))

    def _mel_power(self, samples: np.ndarray) -> np.ndarray:
        """Mel power spectrogram `(frames, num_mel_bins)` of float32 samples, floored at `mel_floor`; frame j's
        periodic Hann window starts at sample j * hop_length (the samples carry their own zero padding; with
        `window_length // 2` zeros in front this is librosa's `melspectrogram(center=True, pad_mode="constant")`).
        torch.stft in float32: several times faster than transformers' per-frame numpy `spectrogram`, the same
        features within float32 rounding."""
        samples = np.require(samples, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])  # what torch.from_numpy takes
        stft = torch.stft(
            torch.from_numpy(samples),
            n_fft=self.window_length,
            hop_length=self.hop_length,
            window=torch.from_numpy(self.window).float(),
            center=False,
            pad_mode="constant",
            return_complex=True,
        )  # (window_length // 2 + 1, frames)
        squares = torch.view_as_real(stft.T).square_()  # (frames, freqs, re/im), in place: the STFT is ours
        power = squares[..., 0] + squares[..., 1]  # (frames, freqs)
        mel_filters = torch.from_numpy(self.mel_filters).float()  # (freqs, mels)
        return (power @ mel_filters).clamp_(min=self.mel_floor).numpy()  # (frames, mels)

    def compute_normalization(self, input_features, audio_chunk_mask) -> tuple[float, float]:
        """Mean and standard deviation of the log-mel values of the real chunks in a batch of this extractor's
        outputs (computed with normalization off), for `feature_mean` / `feature_std`.

        `input_features` `(B, num_mel_bins, T * A)`, `audio_chunk_mask` `(B, T)`; numpy arrays or torch tensors.
        """
        features = np.asarray(input_features, dtype=np.float64)
        mask = np.asarray(audio_chunk_mask, dtype=bool)
        batch, mels, frames = features.shape
        if mask.ndim != 2 or mask.shape[0] != batch or frames % mask.shape[1]:
            raise ValueError(f"audio_chunk_mask {mask.shape} does not fit input_features {features.shape}")
        chunks = features.reshape(batch, mels, mask.shape[1], -1).transpose(0, 2, 1, 3)  # (B, T, mels, A)
        real = chunks[mask]
        if real.size == 0:
            raise ValueError("no chunk holds audio: cannot compute the log-mel statistics")
        return float(real.mean()), float(real.std())


class ChunkLogMelAccumulator:
    """A `MirasolFeatureExtractor`'s features for fixed chunk windows, from a waveform given block by block.

    Each block's complete STFT frames are turned into mel power at once and added, weighted by the time each shares
    with each bin, into per-bin sums; the samples of the frames that straddle the block's end wait for the next
    block, and the frames at the waveform's end are made at `finish` (zero padded past the samples). Memory
    holds the `(T * A, mels)` sums and one block, never the waveform; the result equals the extractor's on the whole
    waveform within float32 rounding.

    Args:
        extractor: the `MirasolFeatureExtractor` whose settings are used.
        chunk_windows: `(T, 2)` start/end seconds of each chunk.
        waveform_start_time: time of the waveform's first sample on the windows' clock; when None, the first
            `feed` gives it.
    """

    def __init__(self, extractor: MirasolFeatureExtractor, chunk_windows, waveform_start_time: float | None = None):
        self.extractor = extractor
        self.windows = np.asarray(chunk_windows, dtype=np.float64)
        if self.windows.ndim != 2 or self.windows.shape[1] != 2:
            raise ValueError(f"chunk_windows must have shape (num_chunks, 2), got {self.windows.shape}")
        num_bins = len(self.windows) * extractor.audio_frames_per_chunk
        self.sums = np.zeros((num_bins, extractor.num_mel_bins), np.float64)  # time-weighted mel power per bin
        self.start_time = None
        self.received = 0  # samples of the waveform fed so far
        self.frames_done = 0  # STFT frames already added to `sums`
        self.pending = np.zeros(0, np.float32)  # zero-padded samples from the start of frame `frames_done` on
        if waveform_start_time is not None:
            self._start(float(waveform_start_time))

    def _start(self, start_time: float):
        extractor = self.extractor
        self.start_time = start_time
        self.offset = extractor._sample_offset(start_time)
        self.first, self.last_needed = extractor._sample_span(self.windows, self.offset)
        bin_edges = extractor._bin_edges(self.windows, -np.inf, np.inf)  # (T, A + 1)
        self.bin_starts, self.bin_ends = bin_edges[:, :-1].ravel(), bin_edges[:, 1:].ravel()  # (T * A,)
        self.first_frame = extractor._frame_range(self.first, self.first + 1, self.offset).start
        # Zeros from the first frame's window start up to sample `first` (where the samples kept begin).
        self.pending = np.zeros(self.first - extractor._frame_start_sample(self.first_frame, self.offset), np.float32)

    def feed(self, samples: np.ndarray, start_time: float | None = None):
        """Add the next `(S,)` samples of the waveform; `start_time`: its first sample's time (first call only)."""
        if self.start_time is None:
            if start_time is None:
                raise ValueError("the waveform's start time is needed: give waveform_start_time or start_time")
            self._start(float(start_time))
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"samples must be mono (samples,), got shape {samples.shape}")
        # The part of the block inside [first, last_needed), in waveform samples.
        begin = min(max(self.first - self.received, 0), len(samples))
        end = min(max(self.last_needed - self.received, 0), len(samples))
        self.received += len(samples)
        if end > begin:
            self.pending = np.concatenate([self.pending, samples[begin:end]])
            hop, length = self.extractor.hop_length, self.extractor.window_length
            complete = (len(self.pending) - length) // hop + 1 if len(self.pending) >= length else 0
            if complete:  # frames whose window lies in the samples present: never past the last (see `finish`)
                self._add_frames(self.pending[: (complete - 1) * hop + length], self.last_needed)

    @property
    def done(self) -> bool:
        """Whether every sample the windows need has been fed (later samples are ignored)."""
        return self.start_time is not None and self.received >= self.last_needed

    def _add_frames(self, padded: np.ndarray, last: int):
        """Add the frames of `padded` (zero-padded samples from the start of frame `frames_done`'s window) to the
        sums; `last`: the end of the samples (a bound on it while more may come)."""
        if len(padded) < self.extractor.window_length:
            return
        mel_power = self.extractor._mel_power(padded)  # (frames, mels)
        start = self.first_frame + self.frames_done
        frames = range(start, start + len(mel_power))
        frame_edges = self.extractor._frame_edges(frames, self.first, last, self.offset)  # (frames + 1,), clock s
        touching = np.flatnonzero((self.bin_ends > frame_edges[0]) & (self.bin_starts < frame_edges[-1]))
        if len(touching):
            overlaps = MirasolFeatureExtractor._bin_averaging(
                frame_edges, self.bin_starts[touching], self.bin_ends[touching], normalize=False, dtype=np.float64
            )  # (touching bins, frames), seconds
            self.sums[touching] += overlaps @ mel_power.astype(np.float64)
        self.frames_done += len(mel_power)
        self.pending = self.pending[len(mel_power) * self.extractor.hop_length :]

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """`(num_mel_bins, T * A)` log-mel and `(T,)` mask, as the extractor gives for the whole waveform."""
        extractor, num_chunks = self.extractor, len(self.windows)
        features = np.full(
            (extractor.num_mel_bins, num_chunks * extractor.audio_frames_per_chunk), extractor.padding_value, np.float32
        )
        mask = np.zeros(num_chunks, dtype=bool)
        if self.start_time is None or self.received <= self.first or self.last_needed <= self.first:
            return features, mask  # no sample under the windows (the extractor's `last == first`)
        last = min(self.received, self.last_needed)
        # The frames left, up to the one holding sample last - 1, their windows zero-padded past `last`.
        frames_left = self.first_frame + self.frames_done
        frames_left = extractor._frame_range(self.first, last, self.offset).stop - frames_left
        if frames_left > 0:
            length = (frames_left - 1) * extractor.hop_length + extractor.window_length
            padded = np.zeros(length, np.float32)
            kept = self.pending[:length]
            padded[: len(kept)] = kept
            self._add_frames(padded, last)
        rate = extractor.sampling_rate
        audio_span = (self.first + self.offset) / rate, (last + self.offset) / rate  # clock seconds
        bin_edges = extractor._bin_edges(self.windows, *audio_span)  # (T, A + 1)
        widths = np.diff(bin_edges, axis=1)  # (T, A)
        mean_power = self.sums / np.where(widths > 0, widths, 1.0).reshape(-1, 1)  # (T * A, mels)
        mean_power = mean_power.reshape(num_chunks, extractor.audio_frames_per_chunk, extractor.num_mel_bins)
        return extractor._log_mel_chunks(mean_power, widths, self.windows)
