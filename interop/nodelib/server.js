#!/usr/bin/env node
// An LwM2M server built on lwm2m-node-lib, an independent implementation,
// that drives one client through a fixed script. The Go test in interop/
// starts it, runs our client against it and checks every step.
//
// Usage: node server.js --lib DIR [--port N] [--timeout SECONDS]
//                       [--accept FORMAT] [--write-format FORMAT]
//
//   --lib           folder whose node_modules/ holds lwm2m-node-lib
//   --port          UDP port on 127.0.0.1; 0 (the default) picks a free one
//   --timeout       give up after this many seconds (default 60)
//   --accept        Accept option of reads and observes, as a node-coap
//                   format name ("text/plain"); "" (the default) sends none,
//                   as the library does unless configured
//   --write-format  Content-Format of writes and executes (default
//                   "text/plain"; the library's own default is
//                   "application-vnd-oma-lwm2m/text", 1541, a pre-1.0 draft)
//   --location      "one" (the default) answers Register with the library's
//                   single Location-Path option "rd/N"; "split" sends one
//                   option per segment ("rd", "N") as RFC 7252 §5.10.7 asks
//
// The script prints one JSON object per line on stdout, each with a "step":
//
//   listening   {port}                              the server is up
//   register    {endpoint, lifetime, version, binding, payload, address}
//   read        {path, value}                       Read /3/0/0
//   write       {path, value, response}             Write /3/0/15
//   write       {path, value, response}             Write /1/0/1 (lifetime)
//   update      {lifetime, payload}                 the Update that followed
//   execute     {path, response}                    Execute /3/0/4
//   discover    {path, value}                       Discover /3/0
//   attributes  {path, value, response}             Write-Attributes /3/0/0
//   discover    {path, value}                       Discover /3/0/0
//   observe     {path, value}                       Observe /3/0/0, first value
//   notify      {path, value}                       the first notification with
//                                                   a value other than the first
//   done        {}                                  all steps passed
//   deregister  {endpoint}                          the client de-registered
//
// A failed step prints {"step": ..., "error": ...} and exits 1. The test
// changes /3/0/0 on the client when it sees "observe", and stops the client
// (which de-registers) when it sees "done"; the script exits 0 after
// "deregister". Logs of lwm2m-node-lib go to stderr (level from
// NODELIB_LOG_LEVEL, default FATAL).
'use strict';

const path = require('path');

function parseArgs(argv) {
    const args = { lib: '', port: 0, timeout: 60, accept: '', writeFormat: 'text/plain', location: 'one' };
    for (let i = 0; i < argv.length; i++) {
        const name = argv[i];
        const value = argv[i + 1];
        if (value === undefined) {
            throw new Error(name + ' needs a value');
        }
        switch (name) {
        case '--lib': args.lib = value; i++; break;
        case '--port': args.port = Number(value); i++; break;
        case '--timeout': args.timeout = Number(value); i++; break;
        case '--accept': args.accept = value; i++; break;
        case '--write-format': args.writeFormat = value; i++; break;
        case '--location': args.location = value; i++; break;
        default:
            throw new Error('unknown argument ' + name);
        }
    }
    if (!args.lib) {
        throw new Error('--lib DIR is required');
    }
    if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
        throw new Error('bad --port');
    }
    if (args.location !== 'one' && args.location !== 'split') {
        throw new Error('bad --location');
    }
    return args;
}

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(step, err) {
    emit({ step: step, error: String(err && err.message ? err.message : err) });
    process.exit(1);
}

// Load a module from the installed tree, never from this repository.
function load(lib, name) {
    return require(require.resolve(name, { paths: [path.resolve(lib)] }));
}

// promisify a node-lib call whose last argument is a callback(err, result).
function call(fn, ...args) {
    return new Promise((resolve, reject) => {
        fn(...args, (err, result) => (err ? reject(err) : resolve(result)));
    });
}

// A queue of events from the server's handlers, awaited one at a time.
class Events {
    constructor() { this.items = []; this.waiters = []; }
    push(ev) {
        const w = this.waiters.findIndex((x) => x.type === ev.type);
        if (w >= 0) {
            this.waiters.splice(w, 1)[0].resolve(ev);
        } else {
            this.items.push(ev);
        }
    }
    next(type) {
        const i = this.items.findIndex((x) => x.type === type);
        if (i >= 0) {
            return Promise.resolve(this.items.splice(i, 1)[0]);
        }
        return new Promise((resolve) => this.waiters.push({ type, resolve }));
    }
}

async function main() {
    let args;
    try {
        args = parseArgs(process.argv.slice(2));
    } catch (err) {
        fail('args', err);
    }
    const timer = setTimeout(() => fail('timeout', 'no success after ' + args.timeout + ' s'), args.timeout * 1000);

    const logger = load(args.lib, 'logops');
    logger.setStream(process.stderr);
    const coap = load(args.lib, 'coap');
    const lwm2m = load(args.lib, 'lwm2m-node-lib').server;

    // lwm2m-node-lib binds its CoAP server to every interface; keep it on
    // loopback, where the test's client is.
    const listen = coap.createServer.prototype.listen;
    coap.createServer.prototype.listen = function (port, address, done) {
        if (typeof address === 'function') {
            done = address;
            address = null;
        }
        return listen.call(this, port, address || '127.0.0.1', done);
    };

    if (args.location === 'split') {
        // lwm2m-node-lib answers Register with one Location-Path option
        // holding "rd/N"; RFC 7252 §5.10.7 wants one option per segment.
        const OutgoingMessage = load(args.lib, 'coap/lib/outgoing_message');
        const setOption = OutgoingMessage.prototype.setOption;
        OutgoingMessage.prototype.setOption = function (name, values) {
            if (name === 'Location-Path' && typeof values === 'string') {
                values = values.split('/').filter((x) => x !== '');
            }
            return setOption.call(this, name, values);
        };
    }

    const config = {
        port: args.port,
        lifetimeCheckInterval: 1000,
        udpWindow: 100,
        defaultType: 'Device',
        logLevel: process.env.NODELIB_LOG_LEVEL || 'FATAL',
        ipProtocol: 'udp4',
        serverProtocol: 'udp4',
        deviceRegistry: { type: 'memory' },
        formats: [{ name: 'application-vnd-oma-lwm2m/text', value: 1541 }],
        writeFormat: args.writeFormat,
    };
    if (args.accept) {
        config.defaultAcceptFormat = args.accept;
    }
    for (const v of ['LWM2M_PORT', 'LWM2M_PROTOCOL', 'LWM2M_REGISTRY_TYPE', 'LWM2M_WRITE_FORMAT', 'LWM2M_DEFAULT_ACCEPT_FORMAT']) {
        delete process.env[v]; // the library would let these override config
    }

    const events = new Events();
    let serverInfo;
    try {
        serverInfo = await call(lwm2m.start, config);
    } catch (err) {
        fail('listening', err);
    }
    const port = serverInfo.server._sock.address().port;
    // The library sends requests to devices through its own socket, as a
    // proxy at config.port; with port 0 it must learn the real one.
    config.port = port;

    lwm2m.setHandler(serverInfo, 'registration', (endpoint, lifetime, version, binding, payload, callback) => {
        events.push({ type: 'register', endpoint, lifetime, version, binding, payload });
        callback();
    });
    lwm2m.setHandler(serverInfo, 'updateRegistration', (device, payload, callback) => {
        events.push({ type: 'update', lifetime: device.lifetime, payload });
        callback();
    });
    lwm2m.setHandler(serverInfo, 'unregistration', (device, callback) => {
        events.push({ type: 'deregister', endpoint: device.name });
        callback();
    });
    emit({ step: 'listening', port: port });

    const reg = await events.next('register');
    let device;
    try {
        device = await call(lwm2m.getDevice, reg.endpoint);
    } catch (err) {
        fail('register', err);
    }
    emit({
        step: 'register', endpoint: reg.endpoint, lifetime: reg.lifetime, version: reg.version,
        binding: reg.binding, payload: reg.payload, address: device.address,
    });
    const id = device.id;

    let step = 'read';
    try {
        const value = await call(lwm2m.read, id, 3, 0, 0);
        emit({ step, path: '/3/0/0', value });

        step = 'write';
        let response = await call(lwm2m.write, id, 3, 0, 15, 'Europe/Madrid');
        emit({ step, path: '/3/0/15', value: 'Europe/Madrid', response });

        // A new lifetime makes the client send a Registration Update.
        response = await call(lwm2m.write, id, 1, 0, 1, '120');
        emit({ step, path: '/1/0/1', value: '120', response });
        let upd = await events.next('update');
        while (upd.lifetime !== '120') {
            upd = await events.next('update');
        }
        step = 'update';
        emit({ step, lifetime: upd.lifetime, payload: upd.payload });

        step = 'execute';
        response = await call(lwm2m.execute, id, 3, 0, 4, null);
        emit({ step, path: '/3/0/4', response });

        step = 'discover';
        let links = await call(lwm2m.discover, id, 3, 0);
        emit({ step, path: '/3/0', value: links });

        step = 'attributes';
        response = await call(lwm2m.writeAttributes, id, 3, 0, 0, { pmin: 0, pmax: 60 });
        emit({ step, path: '/3/0/0', value: 'pmin=0&pmax=60', response });

        step = 'discover';
        links = await call(lwm2m.discover, id, 3, 0, 0);
        emit({ step, path: '/3/0/0', value: links });

        step = 'observe';
        let first;
        let notified;
        const changed = new Promise((resolve) => { notified = resolve; });
        await new Promise((resolve, reject) => {
            lwm2m.observe(id, 3, 0, 0, (value) => {
                if (value !== first) {
                    notified(value);
                }
            }, (err, value) => {
                if (err) {
                    reject(err);
                    return;
                }
                first = value;
                resolve();
            });
        });
        emit({ step, path: '/3/0/0', value: first });

        step = 'notify';
        emit({ step, path: '/3/0/0', value: await changed });
    } catch (err) {
        fail(step, err);
    }

    emit({ step: 'done' });
    const dereg = await events.next('deregister');
    emit({ step: 'deregister', endpoint: dereg.endpoint });
    clearTimeout(timer);
    lwm2m.stop(serverInfo, () => process.exit(0));
}

main().catch((err) => fail('internal', err));
