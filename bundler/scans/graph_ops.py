"""The graph scan's op tables: which TensorFlow ops a served graph may hold, and why.

``ALLOWED_OPS`` is what Keras exports of ordinary models contain, by family, each op with why it may
be served: none opens a file, a socket or a process, or calls back into Python. It was collected
from the example bundles and from exports of Dense, Conv, pooling, LSTM/GRU/SimpleRNN,
BatchNormalization, LayerNormalization, Dropout, Embedding, StringLookup/IntegerLookup/
TextVectorization, Hashing, Normalization, Discretization, MultiHeadAttention and keras_hub's
tokenizers (whose own ops come from an op library: ``bundler.compat.op_libraries``), then completed
by reasoning about each family. An allowed op may still be refused for its attributes
(``ATTRIBUTE_RULES``): ``Empty`` returns uninitialised memory unless ``init`` is set.

``SAVER_OPS`` (checkpointing) are allowed only inside a saver function, on paths made from the
filename the loader feeds (``graph_scan``). ``REFUSED_OPS`` names what the rest would do, so a
refusal says more than "unknown"; any op in none of the tables is refused too (the scan fails
closed). The tables reflect TensorFlow 2.21 (``DynamicStitch``, for one, zero-fills rows no index
names since 2.x; older kernels left them uninitialised).
"""

from __future__ import annotations

from collections.abc import Callable

from bundler.scans.saved_model_proto import Node


def _family(reason: str, ops: str) -> dict[str, str]:
    return dict.fromkeys(ops.split(), reason)


# Each op maps to why it may be served (see the module docstring for where the list comes from).
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
        "Conv2D Conv3D Conv2DBackpropInput Conv3DBackpropInputV2 DepthwiseConv2dNative "
        "DepthwiseConv2dNativeBackpropInput MaxPool MaxPoolV2 MaxPool3D AvgPool AvgPool3D "
        "FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 Relu Relu6 Elu Selu LeakyRelu "
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
        "InvertPermutation MatrixBandPart OneHot OnesLike Pack Rank Reshape "
        "Reverse ReverseV2 ReverseSequence Roll ScatterNd Shape ShapeN Size Slice Split SplitV "
        "Squeeze StridedSlice StridedSliceGrad Tile TensorScatterUpdate TensorScatterAdd "
        "TensorScatterSub TensorScatterMax TensorScatterMin Transpose Unique UniqueV2 "
        "UniqueWithCounts Unpack Where ZerosLike Bitcast CheckNumerics Diag DiagPart "
        "MatrixDiagPart Mfcc AudioSpectrogram SparseToDense SparseReshape SparseSlice "
        "SparseTensorDenseMatMul SparseConcat SparseFillEmptyRows SparseReduceSum "
        "SparseSegmentSum SparseSegmentMean SparseSegmentSqrtN SparseAdd SparseReorder "
        "SparseCross SparseCrossV2 SparseCrossHashed SparseSplit SparseTensorDenseAdd "
        "SparseToSparseSetOperation DenseToDenseSetOperation DenseToSparseSetOperation "
        "SetSize Cross LowerBound UpperBound",
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
        "StringFormat ReduceJoin EncodeBase64 DecodeBase64 Fingerprint UnsortedSegmentJoin "
        "DecodeRaw",
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
        "leaves the part of its output no input covers uninitialised",
        "ParallelConcat _ParallelConcatStart _ParallelConcatUpdate _ScopedAllocator",
    ),
    **_family(
        "talks to other processes or machines",
        "_Send _Recv _HostSend _HostRecv Send Recv CollectiveReduce CollectiveReduceV2 "
        "CollectiveGather CollectiveBcastSend CollectiveBcastRecv RemoteCall RpcCall "
        "RpcClient RpcServer",
    ),
}


def _empty(node: Node) -> str | None:
    if node.flag("init") is True:
        return None
    return (
        "without init=true returns uninitialised memory: whatever the process freed there last, "
        "another request's data included"
    )


# op -> a check of its attributes: why this node may not be served, or None
ATTRIBUTE_RULES: dict[str, Callable[[Node], str | None]] = {"Empty": _empty}
