"""The graph safety scan: may ``saved_model/`` be served, judged from ``saved_model.pb`` alone?

The graph path (``policy="fallback"``) runs whatever the SavedModel's functions say, and a
TensorFlow graph can do more than arithmetic: read and write files (``ReadFile``, ``WriteFile``,
``SaveV2`` with a path of its choosing), list folders, call back into Python (``PyFunc``), print
to a file. A bundle's author controls that graph as much as ``model.keras``. So before TensorFlow
loads it, every op of every graph and of every function in its library is checked against
``ALLOWED_OPS``: what Keras exports of ordinary models contain. Anything else, an unknown op
included, is refused.

The one exception is checkpointing. Every SavedModel TensorFlow writes carries a save function and
a restore function (``SaveV2``/``RestoreV2``/``MergeV2Checkpoints``), called from the top-level
graph through its ``saver_def`` by loaders that restore variables by running the graph (TensorFlow
Serving). Those ops are allowed only in such a *saver function*: one that no other function in
the library calls and the object graph (what the Python loader builds callables from) never names,
called at the top level only by the save and restore nodes the ``saver_def`` names, fed its
filename placeholder: so the path it writes or reads is the one the loader feeds it.
Models without an object graph (TensorFlow 1 SavedModels) are refused: loading one runs its
top-level graph's init and restore ops, which a Keras export never needs.

Asset files (vocabularies of lookup tables) must be named by a plain relative path that stays
inside ``saved_model/assets/`` and is listed in the lock.

It reads ``saved_model.pb`` itself (``saved_model_proto``, over ``protowire``), so ``bundle
verify`` runs it without TensorFlow; the file is bounded in size (``SAVED_MODEL_MAX_BYTES``),
nesting is bounded by the structure read, and a malformed file is a finding, never an exception.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from .bundle_paths import read_plain_file, unsafe_path_reason
from .errors import UnsafeBundleError, UnsafeLoadWarning
from .problems import Problem
from .protowire import WireError
from .saved_model_proto import (
    SAVER_FILENAME,
    SAVER_RESTORE,
    SAVER_SAVE,
    MetaGraph,
    Node,
    read_meta_graphs,
)

SAVED_MODEL_FILENAME = "saved_model.pb"
SAVED_MODEL_MAX_BYTES = 256 << 20
MAX_REPORTED = 20  # findings listed in a refusal or a verify report; a hostile graph has many
log = logging.getLogger("bundler")


def _family(reason: str, ops: str) -> dict[str, str]:
    return dict.fromkeys(ops.split(), reason)


# What Keras exports of ordinary models contain (collected from the example bundles and from
# exports of Dense, Conv, pooling, LSTM/GRU/SimpleRNN, BatchNormalization, LayerNormalization,
# Dropout, Embedding, StringLookup/IntegerLookup/TextVectorization, Hashing, Normalization,
# Discretization, MultiHeadAttention and friends), then completed by reasoning about each family.
# Each op maps to why it may be served. No op here opens a file, a socket or a process, or calls
# back into Python.
ALLOWED_OPS: dict[str, str] = {
    # the graph's plumbing: inputs, constants, names, ordering
    **_family(
        "graph plumbing",
        "Placeholder PlaceholderWithDefault Const Identity IdentityN NoOp StopGradient "
        "PreventGradient Snapshot EnsureShape CheckNumerics CheckNumericsV2 _Arg _Retval",
    ),
    # calls to other functions of the same library (the callee is checked too, by name)
    **_family("a call to a function of this SavedModel", "PartitionedCall StatefulPartitionedCall"),
    # control flow: branches and loops run functions of this library, checked like any other
    **_family(
        "control flow",
        "If StatelessIf While StatelessWhile Case StatelessCase Switch Merge Enter Exit "
        "NextIteration LoopCond ControlTrigger Assert",
    ),
    # variables: handles to the model's own weights, read and assigned in memory
    **_family(
        "variables",
        "VarHandleOp ReadVariableOp AssignVariableOp AssignAddVariableOp AssignSubVariableOp "
        "VarIsInitializedOp DisableCopyOnRead DestroyResourceOp ResourceGather ResourceGatherNd "
        "ResourceScatterUpdate ResourceScatterAdd ResourceScatterSub VariableShape",
    ),
    # arithmetic and comparisons on tensors
    **_family(
        "math",
        "Abs Acos Acosh Add AddN AddV2 All Any ApproximateEqual ArgMax ArgMin Asin Asinh Atan "
        "Atan2 Atanh BatchMatMul BatchMatMulV2 BatchMatMulV3 BiasAdd Bucketize Cast Ceil "
        "ClipByValue Complex ComplexAbs Conj Cos Cosh Cumprod Cumsum Digamma Div DivNoNan Einsum "
        "Equal Erf Erfc Erfinv Exp Expm1 Floor FloorDiv FloorMod Greater GreaterEqual Imag "
        "Inv IsFinite IsInf IsNan L2Loss Less LessEqual Lgamma Log Log1p LogicalAnd LogicalNot "
        "LogicalOr MatMul Max Maximum Mean Min Minimum Mod Mul MulNoNan Ndtri Neg NotEqual "
        "Pow Prod Real RealDiv Reciprocal Rint Round Rsqrt SegmentSum SegmentMax SegmentMean "
        "Select SelectV2 Sigmoid Sign Sin Sinh Softplus Softsign Sqrt Square SquaredDifference "
        "Sub Sum Tan Tanh TruncateDiv TruncateMod UnsortedSegmentSum UnsortedSegmentMax "
        "UnsortedSegmentMin UnsortedSegmentProd Xdivy Xlog1py Xlogy BitwiseAnd BitwiseOr "
        "BitwiseXor Invert LeftShift RightShift MatrixBandPart MatrixDiag MatrixDiagV3 "
        "MatrixDiagPartV3 MatrixSetDiagV3 MatrixInverse MatrixDeterminant Cholesky Qr Svd "
        "SelfAdjointEigV2 MatrixTriangularSolve MatrixSolve FFT IFFT RFFT IRFFT FFT2D IFFT2D "
        "RFFT2D IRFFT2D ComplexAbs Angle EuclideanNorm Range LinSpace HistogramFixedWidth "
        "TopKV2 InTopKV2 Bincount DenseBincount RaggedBincount SparseBincount",
    ),
    # neural-network kernels
    **_family(
        "neural-network kernels",
        "Conv1D Conv2D Conv3D Conv2DBackpropInput Conv3DBackpropInputV2 DepthwiseConv2dNative "
        "DepthwiseConv2dNativeBackpropInput MaxPool MaxPoolV2 MaxPool3D AvgPool AvgPool3D "
        "FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 Relu Relu6 Elu Selu LeakyRelu Gelu "
        "Softmax LogSoftmax LRN Dilation2D SparseSoftmaxCrossEntropyWithLogits "
        "SoftmaxCrossEntropyWithLogits CudnnRNN CudnnRNNV2 CudnnRNNV3 BlockLSTM BlockLSTMV2 "
        "LSTMBlockCell GRUBlockCell ResizeBilinear ResizeNearestNeighbor ResizeBicubic "
        "ResizeArea ScaleAndTranslate CropAndResize ExtractImagePatches ExtractVolumePatches "
        "MirrorPad Pad PadV2 SpaceToBatchND BatchToSpaceND SpaceToDepth DepthToSpace "
        "AdjustContrastv2 AdjustHue AdjustSaturation RGBToHSV HSVToRGB",
    ),
    # shapes, slicing, gathering, concatenation: rearranging tensors in memory
    **_family(
        "array ops",
        "BroadcastArgs BroadcastGradientArgs BroadcastTo Concat ConcatV2 ConcatOffset "
        "DynamicPartition DynamicStitch ExpandDims Fill Gather GatherNd GatherV2 Empty "
        "InvertPermutation MatrixBandPart OneHot OnesLike Pack ParallelConcat Rank Reshape "
        "Reverse ReverseV2 ReverseSequence Roll ScatterNd Shape ShapeN Size Slice Split SplitV "
        "Squeeze StridedSlice StridedSliceGrad Tile TensorScatterUpdate TensorScatterAdd "
        "TensorScatterSub TensorScatterMax TensorScatterMin Transpose Unique UniqueV2 "
        "UniqueWithCounts Unpack Where ZerosLike Bitcast CheckNumerics Diag DiagPart "
        "MatrixDiagPart Mfcc AudioSpectrogram SparseToDense SparseReshape SparseSlice "
        "SparseTensorDenseMatMul SparseConcat SparseFillEmptyRows SparseReduceSum "
        "SparseSegmentSum SparseSegmentMean SparseSegmentSqrtN SparseAdd SparseReorder "
        "SparseCross SparseCrossV2 SparseCrossHashed SparseSplit SparseTensorDenseAdd "
        "SparseToSparseSetOperation DenseToDenseSetOperation DenseToSparseSetOperation "
        "SetSize Cross LowerBound UpperBound SearchSorted",
    ),
    # ragged tensors (text preprocessing layers produce them)
    **_family(
        "ragged tensors",
        "RaggedTensorToTensor RaggedTensorToSparse RaggedTensorFromVariant RaggedTensorToVariant "
        "RaggedGather RaggedRange RaggedCross",
    ),
    # tensor lists and arrays: the state of RNN loops and of map_fn
    **_family(
        "tensor lists",
        "TensorListReserve TensorListFromTensor TensorListStack TensorListGetItem "
        "TensorListSetItem TensorListLength TensorListElementShape TensorListPushBack "
        "TensorListPopBack EmptyTensorList TensorListConcatV2 TensorListSplit TensorListGather "
        "TensorListScatterIntoExistingList TensorListResize TensorArrayV3 TensorArrayReadV3 "
        "TensorArrayWriteV3 TensorArrayGatherV3 TensorArrayScatterV3 TensorArraySizeV3 "
        "TensorArrayConcatV3 TensorArraySplitV3 TensorArrayCloseV3",
    ),
    # strings, in memory (text preprocessing): none of these opens what a string names
    **_family(
        "strings in memory",
        "StringJoin StringSplit StringSplitV2 StringLower StringUpper StringStrip StringLength "
        "StringToHashBucketFast StringToHashBucketStrong StringToNumber StaticRegexReplace "
        "StaticRegexFullMatch RegexReplace RegexFullMatch Substr AsString UnicodeDecode "
        "UnicodeDecodeWithOffsets UnicodeEncode UnicodeTranscode StringNGrams "
        "StringFormat ReduceJoin EncodeBase64 DecodeBase64 Fingerprint",
    ),
    # lookup tables held in memory (StringLookup, IntegerLookup, TextVectorization, Hashing):
    # their keys come from constants of the graph; a table initialised from a text file is not
    # here, since its file name is a tensor the graph may compute
    **_family(
        "lookup tables in memory",
        "HashTable HashTableV2 MutableHashTable MutableHashTableV2 MutableHashTableOfTensorsV2 "
        "MutableDenseHashTableV2 LookupTableFindV2 LookupTableImportV2 LookupTableInsertV2 "
        "LookupTableRemoveV2 LookupTableSizeV2 LookupTableExportV2 InitializeTableV2 "
        "AnonymousHashTable AnonymousMutableHashTable AnonymousMutableDenseHashTable "
        "AnonymousMutableHashTableOfTensors",
    ),
    # randomness (Dropout, noise layers, random preprocessing) from seeds, in memory
    **_family(
        "random numbers",
        "RandomUniform RandomUniformInt RandomStandardNormal TruncatedNormal Multinomial "
        "RandomShuffle StatelessRandomUniformV2 StatelessRandomUniformIntV2 "
        "StatelessRandomNormalV2 StatelessTruncatedNormalV2 StatelessRandomGetKeyCounter "
        "StatelessRandomGetKeyCounterAlg StatelessRandomGetAlg StatelessRandomUniform "
        "StatelessRandomNormal StatelessTruncatedNormal StatelessRandomUniformInt "
        "StatelessMultinomial RngReadAndSkip RngSkip StatefulUniform StatefulUniformInt "
        "StatefulStandardNormalV2 StatefulTruncatedNormal StatelessRandomUniformFullIntV2",
    ),
    # image decoding of bytes the caller passes in (no file is opened)
    **_family(
        "image bytes in memory",
        "DecodeJpeg DecodePng DecodeImage DecodeBmp DecodeGif EncodeJpeg EncodePng",
    ),
}

# Checkpointing: allowed only inside a saver function (see the module docstring).
SAVER_OPS: dict[str, str] = _family(
    "checkpoint save/restore of the model's own variables, fed the path by the loader",
    "SaveV2 RestoreV2 MergeV2Checkpoints ShardedFilename",
)

# Named, so that the refusal says what the op would do rather than only "unknown".
REFUSED_OPS: dict[str, str] = {
    **_family(
        "reads, writes, lists or deletes files",
        "ReadFile WriteFile MatchingFiles DeleteFile Save SaveSlices Restore RestoreSlice "
        "SaveV2 RestoreV2 MergeV2Checkpoints ShardedFilename ImmutableConst "
        "InitializeTableFromTextFile InitializeTableFromTextFileV2 WholeFileReader "
        "WholeFileReaderV2 TextLineReader TextLineReaderV2 FixedLengthRecordReader "
        "FixedLengthRecordReaderV2 TFRecordReader TFRecordReaderV2 ReaderReadV2 "
        "TFRecordDataset TFRecordDatasetV2 TextLineDataset FixedLengthRecordDataset "
        "FixedLengthRecordDatasetV2 SaveDataset SaveDatasetV2 LoadDataset "
        "CreateSummaryFileWriter WriteSummary WriteScalarSummary WriteHistogramSummary "
        "WriteImageSummary WriteAudioSummary WriteGraphSummary WriteRawProtoSummary "
        "CreateSummaryDbWriter ImportEvent DebugIdentity DebugIdentityV2 DebugIdentityV3 "
        "DebugNanCount DebugNumericSummary DebugNumericSummaryV2 LoadTPUEmbedding",
    ),
    **_family("calls back into Python", "PyFunc PyFuncStateless EagerPyFunc NumpyFunction"),
    **_family("prints, possibly to a file named by the graph", "Print PrintV2 Timestamp"),
    **_family(
        "talks to other processes or machines",
        "_Send _Recv _HostSend _HostRecv Send Recv CollectiveReduce CollectiveReduceV2 "
        "CollectiveGather CollectiveBcastSend CollectiveBcastRecv RemoteCall RpcCall "
        "RpcClient RpcServer",
    ),
}


@dataclass(frozen=True)
class Finding:
    """One reason the graph must not be served: where (function and node) and what."""

    function: str | None  # None: the top-level graph
    node: str
    op: str
    message: str

    def __str__(self) -> str:
        where = f"function {self.function!r}" if self.function else "the top-level graph"
        return f"{where}, node {self.node!r}: {self.message}"


def _op_findings(
    function: str | None, nodes: Iterable[Node], library: dict[str, tuple[Node, ...]], saver: bool
) -> list[Finding]:
    findings = []
    for node in nodes:
        for callee in node.calls:
            if callee not in library:
                findings.append(
                    Finding(
                        function,
                        node.name,
                        node.op,
                        f"op {node.op!r} calls function {callee!r}, which is not in the "
                        "SavedModel's function library",
                    )
                )
        if node.op in ALLOWED_OPS or node.op in library or (saver and node.op in SAVER_OPS):
            continue
        if node.op in SAVER_OPS:
            reason = (
                "reads or writes a checkpoint at a path the graph chooses (allowed only in the "
                "save and restore functions that only the top-level graph's saver calls)"
            )
        elif node.op in REFUSED_OPS:
            reason = REFUSED_OPS[node.op]
        else:
            reason = "is not an op a Keras export contains"
        findings.append(Finding(function, node.name, node.op, f"op {node.op!r} {reason}"))
    return findings


def _node_name(tensor: str) -> str:
    """``saver_filename`` for ``saver_filename:0`` and ``^saver_filename`` (a control input)."""
    return tensor.lstrip("^").split(":", 1)[0]


def _saver_functions(meta: MetaGraph) -> set[str]:
    """Functions that hold checkpoint ops and that only the saver calls, with the loader's path.

    Such a function is called by no other function and not named by the object graph; in the
    top-level graph, only by the nodes the ``saver_def`` names as its save and restore ops, whose
    first input is the ``saver_def``'s filename placeholder (what the loader feeds).
    """
    called_by_functions = {
        callee
        for nodes in meta.functions.values()
        for node in nodes
        for callee in (*node.calls, node.op)
    }
    called_by_functions |= {name for pair in meta.gradients for name in pair}
    saver_nodes = {_node_name(meta.saver.get(n, "")) for n in (SAVER_SAVE, SAVER_RESTORE)}
    filename = _node_name(meta.saver.get(SAVER_FILENAME, ""))
    placeholders = {node.name for node in meta.nodes if node.op == "Placeholder"}
    savers = set()
    for name, nodes in meta.functions.items():
        if not any(node.op in SAVER_OPS for node in nodes):
            continue
        if name in called_by_functions:
            continue
        callers = [node for node in meta.nodes if name in (*node.calls, node.op)]
        if not callers or not all(
            node.name in saver_nodes
            and node.inputs[:1] in ((filename,), (f"{filename}:0",))
            and filename in placeholders
            for node in callers
        ):
            continue
        if meta.object_graph is not None and name.encode() in meta.object_graph:
            continue  # the Python loader could call it with a path of the graph's choosing
        savers.add(name)
    return savers


def scan_meta_graph(meta: MetaGraph, assets_in_lock: Callable[[str], bool]) -> list[Finding]:
    findings: list[Finding] = []
    if meta.object_graph is None:
        findings.append(
            Finding(
                None,
                "",
                "",
                "the SavedModel has no object graph (a TensorFlow 1 SavedModel, whose loader "
                "runs its init ops); Keras exports always have one",
            )
        )
    savers = _saver_functions(meta)
    findings += _op_findings(None, meta.nodes, meta.functions, saver=False)
    for name, nodes in meta.functions.items():
        findings += _op_findings(name, nodes, meta.functions, saver=name in savers)
    for function, gradient in meta.gradients:
        for name in (function, gradient):
            if name not in meta.functions:
                findings.append(
                    Finding(None, "", "", f"a gradient names function {name!r}, not in the library")
                )
    for asset in meta.assets:
        reason = unsafe_path_reason(asset)
        if reason is not None:
            findings.append(Finding(None, "", "", f"asset path {asset!r} {reason}"))
        elif not assets_in_lock(f"assets/{asset}"):
            findings.append(
                Finding(None, "", "", f"asset {asset!r} is not a file of the bundle's SavedModel")
            )
    return findings


def scan_saved_model(root: Path, saved_model: str, files: Collection[str]) -> list[str]:
    """Why the SavedModel ``root/saved_model`` must not be served: one line each; [] if it may.

    ``files`` are the bundle's files (the lock's table): an asset must be one of them.
    """
    path = root / saved_model / SAVED_MODEL_FILENAME
    try:
        data = read_plain_file(path, SAVED_MODEL_MAX_BYTES)
    except OSError as error:
        return [f"cannot be read: {error.strerror or error}"]
    except ValueError as error:  # a link, a FIFO, larger than the bound
        return [str(error)]
    try:
        meta_graphs = read_meta_graphs(data)
    except WireError as error:
        return [f"is not a valid SavedModel: {error}"]
    if not meta_graphs:
        return ["holds no graph"]

    def listed(asset: str) -> bool:
        return f"{saved_model}/{asset}" in files

    findings = [f for meta in meta_graphs for f in scan_meta_graph(meta, listed)]
    return [str(f) if f.node or f.function else f.message for f in findings]


def check_graph(root: Path, saved_model: str, files: Collection[str], *, unsafe: bool) -> None:
    """Refuse to serve an unsafe graph (UnsafeBundleError); with ``unsafe=True``, say so loudly."""
    findings = scan_saved_model(root, saved_model, files)
    if not findings:
        return
    where = root / saved_model / SAVED_MODEL_FILENAME
    if unsafe:
        message = (
            f"serving {root / saved_model} with unsafe=True although the graph scan refuses it: "
            f"{findings[0]}"
        )
        log.warning(message)
        warnings.warn(message, UnsafeLoadWarning, stacklevel=4)
        return
    more = len(findings) - 1
    raise UnsafeBundleError(
        f"the SavedModel graph is not served: {findings[0]}"
        + (f" (and {more} more)" if more else "")
        + "; load with unsafe=True only if you made it",
        path=where,
        details=findings[1:MAX_REPORTED],
    )


def graph_problems(
    root: Path, saved_model: str, files: Collection[str], earlier: Iterable[Problem]
) -> list[Problem]:
    """The graph scan as verify Problems (kind ``unsafe``), at most ``MAX_REPORTED`` of them.

    Skipped when an earlier problem is about ``saved_model.pb`` (missing, changed): that one
    already says the bundle is not what its lock describes.
    """
    path = f"{saved_model}/{SAVED_MODEL_FILENAME}"
    if path not in files or any(problem.path == path for problem in earlier):
        return []
    findings = scan_saved_model(root, saved_model, files)
    problems = [Problem(path, "unsafe", finding) for finding in findings[:MAX_REPORTED]]
    if len(findings) > MAX_REPORTED:
        problems.append(
            Problem(path, "unsafe", f"... and {len(findings) - MAX_REPORTED} more unsafe ops")
        )
    return problems
