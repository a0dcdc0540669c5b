"""The faces: gRPC, HTTP and the AWS-compatible endpoint, translating to and from the core."""
