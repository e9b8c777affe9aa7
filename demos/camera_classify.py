"""Classify camera frames live with a reverb-edge model, using only the public API.

    python demos/camera_classify.py                       # the first camera found
    python demos/camera_classify.py --source synthetic    # drawn digits, no camera needed
    python demos/camera_classify.py --source clip.mp4 --serve 8080

Each frame is cropped to the centre, preprocessed as the model's input spec
says and classified; the loop prints one line per frame. With --serve, a
browser at http://127.0.0.1:PORT/ shows the annotated stream. Stop with Ctrl-C.
"""

import argparse

from reverb_edge import Engine
from reverb_edge.camera import CameraLoop, LiveView, PreviewServer, encode_jpeg, open_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist", help="a .reverb file or a shipped model name")
    parser.add_argument("--source", default="auto", help="auto, picamera2, 0, /dev/video0, a video, a folder or synthetic")
    parser.add_argument("--serve", type=int, metavar="PORT", help="serve the annotated stream on 127.0.0.1:PORT")
    parser.add_argument("--frames", type=int, default=0, help="stop after this many frames (0: run until Ctrl-C)")
    args = parser.parse_args()

    engine = Engine.load(args.model)
    view = LiveView()
    server = PreviewServer(view, "127.0.0.1", args.serve) if args.serve is not None else None
    if server is not None:
        server.start()
        print(f"open {server.url} in a browser")

    loop = CameraLoop(engine, open_source(args.source), smoothing=3, annotate=server is not None)
    try:
        for count, result in enumerate(loop, start=1):
            prediction = result.prediction
            print(f"frame {prediction.frame}: {prediction.label} ({prediction.confidence:.0%}), "
                  f"{prediction.latency_ms:.1f} ms")
            if server is not None:
                view.publish(encode_jpeg(result.annotated), prediction.to_dict())
            if count == args.frames:
                break
    except KeyboardInterrupt:
        pass
    finally:
        loop.stop()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
