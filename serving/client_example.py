#!/usr/bin/env python
"""Ask a TF Serving (or `tfrec-attn serve`) endpoint for recommendations.

Needs only `tensorflow-serving-api` and `grpcio` — what a backend team already has:

    python serving/client_example.py --server localhost:8500 --history 50,172,133 -k 10
"""

import argparse

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="localhost:8500")
    parser.add_argument("--model", default="retrieval")
    parser.add_argument("--history", required=True, help="item ids, oldest first, comma-separated")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()

    channel = grpc.insecure_channel(args.server)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = args.model
    request.model_spec.signature_name = "serving_default"
    history = [args.history.split(",")]  # a batch of one user: [1, history_length]
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(history, dtype=tf.string))
    response = stub.Predict(request, args.timeout)  # deadline in seconds

    item_ids = tf.make_ndarray(response.outputs["item_ids"])[0]
    scores = tf.make_ndarray(response.outputs["scores"])[0]
    print(f"model {response.model_spec.name} version {response.model_spec.version.value}")
    for rank, (item, score) in enumerate(zip(item_ids[: args.k], scores[: args.k]), start=1):
        print(f"{rank:>3}  {item.decode()}  {score:.4f}")


if __name__ == "__main__":
    main()
