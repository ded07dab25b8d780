"""The README's data loader: a PyTorch-style map dataset over `tenstore
serve`, with nothing but pyzmq and webdataset.tenbin. Keep in sync with
README.md (the test runs this file)."""
import os

import zmq
from webdataset import tenbin


class TenstoreDataset:
    """Random access to a tenstore served at `addr`: dataset[i] is a dict
    of the i-th sample's arrays, by name."""

    def __init__(self, addr="tcp://127.0.0.1:5555", prefix=b""):
        self.addr, self._sock, self._pid = addr, None, None
        self.keys, after = [], b""
        while True:  # page through the keys, 10,000 at a time
            page = self._ask(b"keys", prefix, after)
            if not page:
                break
            self.keys += page
            after = page[-1]

    def __getstate__(self):  # workers get a copy without the socket (spawn pickles)
        return {**self.__dict__, "_sock": None, "_pid": None}

    def _ask(self, *frames):
        if self._pid != os.getpid():  # one socket per process (DataLoader workers fork)
            self._sock = zmq.Context.instance().socket(zmq.REQ)
            self._sock.connect(self.addr)
            self._pid = os.getpid()
        self._sock.send_multipart(frames)
        status, *reply = self._sock.recv_multipart()
        if status != b"ok":
            raise KeyError(reply[0].decode())
        return reply

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        arrays, names = tenbin.decode_buffer(self._ask(b"get", self.keys[i])[0], infos=True)
        return dict(zip(names, arrays))
