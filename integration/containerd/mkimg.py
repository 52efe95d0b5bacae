#!/usr/bin/env python3
"""Writes the sandbox image pinip.local/pause:1 as an OCI archive: one layer holding the
static pause binary. Usage: mkimg.py <pause binary> <archive to write>."""
import hashlib
import io
import json
import sys
import tarfile

NAME = 'pinip.local/pause:1'


def digest(b):
    return 'sha256:' + hashlib.sha256(b).hexdigest()


def main(src, out):
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode='w', format=tarfile.PAX_FORMAT) as t:
        info = t.gettarinfo(src, arcname='pause')
        info.uid = info.gid = 0
        info.uname = info.gname = ''
        info.mtime = 0
        with open(src, 'rb') as f:
            t.addfile(info, f)
    layer = layer_buf.getvalue()
    config = json.dumps({
        'architecture': 'amd64', 'os': 'linux',
        'config': {'Entrypoint': ['/pause'], 'User': '65535:65535', 'WorkingDir': '/'},
        'rootfs': {'type': 'layers', 'diff_ids': [digest(layer)]},
        'history': [{'created_by': 'pinip mkimg.py'}]}).encode()
    manifest = json.dumps({
        'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
        'config': {'mediaType': 'application/vnd.oci.image.config.v1+json',
                   'digest': digest(config), 'size': len(config)},
        'layers': [{'mediaType': 'application/vnd.oci.image.layer.v1.tar',
                    'digest': digest(layer), 'size': len(layer)}]}).encode()
    index = json.dumps({'schemaVersion': 2, 'manifests': [{
        'mediaType': 'application/vnd.oci.image.manifest.v1+json',
        'digest': digest(manifest), 'size': len(manifest),
        'platform': {'architecture': 'amd64', 'os': 'linux'},
        'annotations': {'io.containerd.image.name': NAME,
                        'org.opencontainers.image.ref.name': '1'}}]}).encode()
    with tarfile.open(out, 'w') as t:
        def add(path, data):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 0
            t.addfile(info, io.BytesIO(data))
        add('oci-layout', b'{"imageLayoutVersion":"1.0.0"}')
        add('index.json', index)
        for blob in (layer, config, manifest):
            add('blobs/sha256/' + hashlib.sha256(blob).hexdigest(), blob)


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
