var EyevinnWHIPClient = (() => {
  var __create = Object.create;
  var __defProp = Object.defineProperty;
  var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
  var __getOwnPropNames = Object.getOwnPropertyNames;
  var __getProtoOf = Object.getPrototypeOf;
  var __hasOwnProp = Object.prototype.hasOwnProperty;
  var __commonJS = (cb, mod) => function __require() {
    return mod || (0, cb[__getOwnPropNames(cb)[0]])((mod = { exports: {} }).exports, mod), mod.exports;
  };
  var __export = (target, all) => {
    for (var name in all)
      __defProp(target, name, { get: all[name], enumerable: true });
  };
  var __copyProps = (to, from, except, desc) => {
    if (from && typeof from === "object" || typeof from === "function") {
      for (let key of __getOwnPropNames(from))
        if (!__hasOwnProp.call(to, key) && key !== except)
          __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
    }
    return to;
  };
  var __toESM = (mod, isNodeMode, target) => (target = mod != null ? __create(__getProtoOf(mod)) : {}, __copyProps(
    // If the importer is in node compatibility mode or this is not an ESM
    // file that has been converted to a CommonJS file using a Babel-
    // compatible transform (i.e. "__esModule" has not been set), then set
    // "default" to the CommonJS "module.exports" for node compatibility.
    isNodeMode || !mod || !mod.__esModule ? __defProp(target, "default", { value: mod, enumerable: true }) : target,
    mod
  ));
  var __toCommonJS = (mod) => __copyProps(__defProp({}, "__esModule", { value: true }), mod);

  // node_modules/events/events.js
  var require_events = __commonJS({
    "node_modules/events/events.js"(exports, module) {
      "use strict";
      var R = typeof Reflect === "object" ? Reflect : null;
      var ReflectApply = R && typeof R.apply === "function" ? R.apply : function ReflectApply2(target, receiver, args) {
        return Function.prototype.apply.call(target, receiver, args);
      };
      var ReflectOwnKeys;
      if (R && typeof R.ownKeys === "function") {
        ReflectOwnKeys = R.ownKeys;
      } else if (Object.getOwnPropertySymbols) {
        ReflectOwnKeys = function ReflectOwnKeys2(target) {
          return Object.getOwnPropertyNames(target).concat(Object.getOwnPropertySymbols(target));
        };
      } else {
        ReflectOwnKeys = function ReflectOwnKeys2(target) {
          return Object.getOwnPropertyNames(target);
        };
      }
      function ProcessEmitWarning(warning) {
        if (console && console.warn) console.warn(warning);
      }
      var NumberIsNaN = Number.isNaN || function NumberIsNaN2(value) {
        return value !== value;
      };
      function EventEmitter() {
        EventEmitter.init.call(this);
      }
      module.exports = EventEmitter;
      module.exports.once = once;
      EventEmitter.EventEmitter = EventEmitter;
      EventEmitter.prototype._events = void 0;
      EventEmitter.prototype._eventsCount = 0;
      EventEmitter.prototype._maxListeners = void 0;
      var defaultMaxListeners = 10;
      function checkListener(listener) {
        if (typeof listener !== "function") {
          throw new TypeError('The "listener" argument must be of type Function. Received type ' + typeof listener);
        }
      }
      Object.defineProperty(EventEmitter, "defaultMaxListeners", {
        enumerable: true,
        get: function() {
          return defaultMaxListeners;
        },
        set: function(arg) {
          if (typeof arg !== "number" || arg < 0 || NumberIsNaN(arg)) {
            throw new RangeError('The value of "defaultMaxListeners" is out of range. It must be a non-negative number. Received ' + arg + ".");
          }
          defaultMaxListeners = arg;
        }
      });
      EventEmitter.init = function() {
        if (this._events === void 0 || this._events === Object.getPrototypeOf(this)._events) {
          this._events = /* @__PURE__ */ Object.create(null);
          this._eventsCount = 0;
        }
        this._maxListeners = this._maxListeners || void 0;
      };
      EventEmitter.prototype.setMaxListeners = function setMaxListeners(n2) {
        if (typeof n2 !== "number" || n2 < 0 || NumberIsNaN(n2)) {
          throw new RangeError('The value of "n" is out of range. It must be a non-negative number. Received ' + n2 + ".");
        }
        this._maxListeners = n2;
        return this;
      };
      function _getMaxListeners(that) {
        if (that._maxListeners === void 0)
          return EventEmitter.defaultMaxListeners;
        return that._maxListeners;
      }
      EventEmitter.prototype.getMaxListeners = function getMaxListeners() {
        return _getMaxListeners(this);
      };
      EventEmitter.prototype.emit = function emit(type) {
        var args = [];
        for (var i2 = 1; i2 < arguments.length; i2++) args.push(arguments[i2]);
        var doError = type === "error";
        var events = this._events;
        if (events !== void 0)
          doError = doError && events.error === void 0;
        else if (!doError)
          return false;
        if (doError) {
          var er;
          if (args.length > 0)
            er = args[0];
          if (er instanceof Error) {
            throw er;
          }
          var err = new Error("Unhandled error." + (er ? " (" + er.message + ")" : ""));
          err.context = er;
          throw err;
        }
        var handler = events[type];
        if (handler === void 0)
          return false;
        if (typeof handler === "function") {
          ReflectApply(handler, this, args);
        } else {
          var len = handler.length;
          var listeners = arrayClone(handler, len);
          for (var i2 = 0; i2 < len; ++i2)
            ReflectApply(listeners[i2], this, args);
        }
        return true;
      };
      function _addListener(target, type, listener, prepend) {
        var m;
        var events;
        var existing;
        checkListener(listener);
        events = target._events;
        if (events === void 0) {
          events = target._events = /* @__PURE__ */ Object.create(null);
          target._eventsCount = 0;
        } else {
          if (events.newListener !== void 0) {
            target.emit(
              "newListener",
              type,
              listener.listener ? listener.listener : listener
            );
            events = target._events;
          }
          existing = events[type];
        }
        if (existing === void 0) {
          existing = events[type] = listener;
          ++target._eventsCount;
        } else {
          if (typeof existing === "function") {
            existing = events[type] = prepend ? [listener, existing] : [existing, listener];
          } else if (prepend) {
            existing.unshift(listener);
          } else {
            existing.push(listener);
          }
          m = _getMaxListeners(target);
          if (m > 0 && existing.length > m && !existing.warned) {
            existing.warned = true;
            var w = new Error("Possible EventEmitter memory leak detected. " + existing.length + " " + String(type) + " listeners added. Use emitter.setMaxListeners() to increase limit");
            w.name = "MaxListenersExceededWarning";
            w.emitter = target;
            w.type = type;
            w.count = existing.length;
            ProcessEmitWarning(w);
          }
        }
        return target;
      }
      EventEmitter.prototype.addListener = function addListener(type, listener) {
        return _addListener(this, type, listener, false);
      };
      EventEmitter.prototype.on = EventEmitter.prototype.addListener;
      EventEmitter.prototype.prependListener = function prependListener(type, listener) {
        return _addListener(this, type, listener, true);
      };
      function onceWrapper() {
        if (!this.fired) {
          this.target.removeListener(this.type, this.wrapFn);
          this.fired = true;
          if (arguments.length === 0)
            return this.listener.call(this.target);
          return this.listener.apply(this.target, arguments);
        }
      }
      function _onceWrap(target, type, listener) {
        var state = { fired: false, wrapFn: void 0, target, type, listener };
        var wrapped = onceWrapper.bind(state);
        wrapped.listener = listener;
        state.wrapFn = wrapped;
        return wrapped;
      }
      EventEmitter.prototype.once = function once2(type, listener) {
        checkListener(listener);
        this.on(type, _onceWrap(this, type, listener));
        return this;
      };
      EventEmitter.prototype.prependOnceListener = function prependOnceListener(type, listener) {
        checkListener(listener);
        this.prependListener(type, _onceWrap(this, type, listener));
        return this;
      };
      EventEmitter.prototype.removeListener = function removeListener(type, listener) {
        var list, events, position, i2, originalListener;
        checkListener(listener);
        events = this._events;
        if (events === void 0)
          return this;
        list = events[type];
        if (list === void 0)
          return this;
        if (list === listener || list.listener === listener) {
          if (--this._eventsCount === 0)
            this._events = /* @__PURE__ */ Object.create(null);
          else {
            delete events[type];
            if (events.removeListener)
              this.emit("removeListener", type, list.listener || listener);
          }
        } else if (typeof list !== "function") {
          position = -1;
          for (i2 = list.length - 1; i2 >= 0; i2--) {
            if (list[i2] === listener || list[i2].listener === listener) {
              originalListener = list[i2].listener;
              position = i2;
              break;
            }
          }
          if (position < 0)
            return this;
          if (position === 0)
            list.shift();
          else {
            spliceOne(list, position);
          }
          if (list.length === 1)
            events[type] = list[0];
          if (events.removeListener !== void 0)
            this.emit("removeListener", type, originalListener || listener);
        }
        return this;
      };
      EventEmitter.prototype.off = EventEmitter.prototype.removeListener;
      EventEmitter.prototype.removeAllListeners = function removeAllListeners(type) {
        var listeners, events, i2;
        events = this._events;
        if (events === void 0)
          return this;
        if (events.removeListener === void 0) {
          if (arguments.length === 0) {
            this._events = /* @__PURE__ */ Object.create(null);
            this._eventsCount = 0;
          } else if (events[type] !== void 0) {
            if (--this._eventsCount === 0)
              this._events = /* @__PURE__ */ Object.create(null);
            else
              delete events[type];
          }
          return this;
        }
        if (arguments.length === 0) {
          var keys = Object.keys(events);
          var key;
          for (i2 = 0; i2 < keys.length; ++i2) {
            key = keys[i2];
            if (key === "removeListener") continue;
            this.removeAllListeners(key);
          }
          this.removeAllListeners("removeListener");
          this._events = /* @__PURE__ */ Object.create(null);
          this._eventsCount = 0;
          return this;
        }
        listeners = events[type];
        if (typeof listeners === "function") {
          this.removeListener(type, listeners);
        } else if (listeners !== void 0) {
          for (i2 = listeners.length - 1; i2 >= 0; i2--) {
            this.removeListener(type, listeners[i2]);
          }
        }
        return this;
      };
      function _listeners(target, type, unwrap) {
        var events = target._events;
        if (events === void 0)
          return [];
        var evlistener = events[type];
        if (evlistener === void 0)
          return [];
        if (typeof evlistener === "function")
          return unwrap ? [evlistener.listener || evlistener] : [evlistener];
        return unwrap ? unwrapListeners(evlistener) : arrayClone(evlistener, evlistener.length);
      }
      EventEmitter.prototype.listeners = function listeners(type) {
        return _listeners(this, type, true);
      };
      EventEmitter.prototype.rawListeners = function rawListeners(type) {
        return _listeners(this, type, false);
      };
      EventEmitter.listenerCount = function(emitter, type) {
        if (typeof emitter.listenerCount === "function") {
          return emitter.listenerCount(type);
        } else {
          return listenerCount.call(emitter, type);
        }
      };
      EventEmitter.prototype.listenerCount = listenerCount;
      function listenerCount(type) {
        var events = this._events;
        if (events !== void 0) {
          var evlistener = events[type];
          if (typeof evlistener === "function") {
            return 1;
          } else if (evlistener !== void 0) {
            return evlistener.length;
          }
        }
        return 0;
      }
      EventEmitter.prototype.eventNames = function eventNames() {
        return this._eventsCount > 0 ? ReflectOwnKeys(this._events) : [];
      };
      function arrayClone(arr, n2) {
        var copy = new Array(n2);
        for (var i2 = 0; i2 < n2; ++i2)
          copy[i2] = arr[i2];
        return copy;
      }
      function spliceOne(list, index) {
        for (; index + 1 < list.length; index++)
          list[index] = list[index + 1];
        list.pop();
      }
      function unwrapListeners(arr) {
        var ret = new Array(arr.length);
        for (var i2 = 0; i2 < ret.length; ++i2) {
          ret[i2] = arr[i2].listener || arr[i2];
        }
        return ret;
      }
      function once(emitter, name) {
        return new Promise(function(resolve, reject) {
          function errorListener(err) {
            emitter.removeListener(name, resolver);
            reject(err);
          }
          function resolver() {
            if (typeof emitter.removeListener === "function") {
              emitter.removeListener("error", errorListener);
            }
            resolve([].slice.call(arguments));
          }
          ;
          eventTargetAgnosticAddListener(emitter, name, resolver, { once: true });
          if (name !== "error") {
            addErrorHandlerIfEventEmitter(emitter, errorListener, { once: true });
          }
        });
      }
      function addErrorHandlerIfEventEmitter(emitter, handler, flags) {
        if (typeof emitter.on === "function") {
          eventTargetAgnosticAddListener(emitter, "error", handler, flags);
        }
      }
      function eventTargetAgnosticAddListener(emitter, name, listener, flags) {
        if (typeof emitter.on === "function") {
          if (flags.once) {
            emitter.once(name, listener);
          } else {
            emitter.on(name, listener);
          }
        } else if (typeof emitter.addEventListener === "function") {
          emitter.addEventListener(name, function wrapListener(arg) {
            if (flags.once) {
              emitter.removeEventListener(name, wrapListener);
            }
            listener(arg);
          });
        } else {
          throw new TypeError('The "emitter" argument must be of type EventEmitter. Received type ' + typeof emitter);
        }
      }
    }
  });

  // node_modules/sdp-transform/lib/grammar.js
  var require_grammar = __commonJS({
    "node_modules/sdp-transform/lib/grammar.js"(exports, module) {
      var grammar = module.exports = {
        v: [{
          name: "version",
          reg: /^(\d*)$/
        }],
        o: [{
          // o=- 20518 0 IN IP4 203.0.113.1
          // NB: sessionId will be a String in most cases because it is huge
          name: "origin",
          reg: /^(\S*) (\d*) (\d*) (\S*) IP(\d) (\S*)/,
          names: ["username", "sessionId", "sessionVersion", "netType", "ipVer", "address"],
          format: "%s %s %d %s IP%d %s"
        }],
        // default parsing of these only (though some of these feel outdated)
        s: [{ name: "name" }],
        i: [{ name: "description" }],
        u: [{ name: "uri" }],
        e: [{ name: "email" }],
        p: [{ name: "phone" }],
        z: [{ name: "timezones" }],
        // TODO: this one can actually be parsed properly...
        r: [{ name: "repeats" }],
        // TODO: this one can also be parsed properly
        // k: [{}], // outdated thing ignored
        t: [{
          // t=0 0
          name: "timing",
          reg: /^(\d*) (\d*)/,
          names: ["start", "stop"],
          format: "%d %d"
        }],
        c: [{
          // c=IN IP4 10.47.197.26
          name: "connection",
          reg: /^IN IP(\d) (\S*)/,
          names: ["version", "ip"],
          format: "IN IP%d %s"
        }],
        b: [{
          // b=AS:4000
          push: "bandwidth",
          reg: /^(TIAS|AS|CT|RR|RS):(\d*)/,
          names: ["type", "limit"],
          format: "%s:%s"
        }],
        m: [{
          // m=video 51744 RTP/AVP 126 97 98 34 31
          // NB: special - pushes to session
          // TODO: rtp/fmtp should be filtered by the payloads found here?
          reg: /^(\w*) (\d*) ([\w/]*)(?: (.*))?/,
          names: ["type", "port", "protocol", "payloads"],
          format: "%s %d %s %s"
        }],
        a: [
          {
            // a=rtpmap:110 opus/48000/2
            push: "rtp",
            reg: /^rtpmap:(\d*) ([\w\-.]*)(?:\s*\/(\d*)(?:\s*\/(\S*))?)?/,
            names: ["payload", "codec", "rate", "encoding"],
            format: function(o2) {
              return o2.encoding ? "rtpmap:%d %s/%s/%s" : o2.rate ? "rtpmap:%d %s/%s" : "rtpmap:%d %s";
            }
          },
          {
            // a=fmtp:108 profile-level-id=24;object=23;bitrate=64000
            // a=fmtp:111 minptime=10; useinbandfec=1
            push: "fmtp",
            reg: /^fmtp:(\d*) ([\S| ]*)/,
            names: ["payload", "config"],
            format: "fmtp:%d %s"
          },
          {
            // a=control:streamid=0
            name: "control",
            reg: /^control:(.*)/,
            format: "control:%s"
          },
          {
            // a=rtcp:65179 IN IP4 193.84.77.194
            name: "rtcp",
            reg: /^rtcp:(\d*)(?: (\S*) IP(\d) (\S*))?/,
            names: ["port", "netType", "ipVer", "address"],
            format: function(o2) {
              return o2.address != null ? "rtcp:%d %s IP%d %s" : "rtcp:%d";
            }
          },
          {
            // a=rtcp-fb:98 trr-int 100
            push: "rtcpFbTrrInt",
            reg: /^rtcp-fb:(\*|\d*) trr-int (\d*)/,
            names: ["payload", "value"],
            format: "rtcp-fb:%s trr-int %d"
          },
          {
            // a=rtcp-fb:98 nack rpsi
            push: "rtcpFb",
            reg: /^rtcp-fb:(\*|\d*) ([\w-_]*)(?: ([\w-_]*))?/,
            names: ["payload", "type", "subtype"],
            format: function(o2) {
              return o2.subtype != null ? "rtcp-fb:%s %s %s" : "rtcp-fb:%s %s";
            }
          },
          {
            // a=extmap:2 urn:ietf:params:rtp-hdrext:toffset
            // a=extmap:1/recvonly URI-gps-string
            // a=extmap:3 urn:ietf:params:rtp-hdrext:encrypt urn:ietf:params:rtp-hdrext:smpte-tc 25@600/24
            push: "ext",
            reg: /^extmap:(\d+)(?:\/(\w+))?(?: (urn:ietf:params:rtp-hdrext:encrypt))? (\S*)(?: (\S*))?/,
            names: ["value", "direction", "encrypt-uri", "uri", "config"],
            format: function(o2) {
              return "extmap:%d" + (o2.direction ? "/%s" : "%v") + (o2["encrypt-uri"] ? " %s" : "%v") + " %s" + (o2.config ? " %s" : "");
            }
          },
          {
            // a=extmap-allow-mixed
            name: "extmapAllowMixed",
            reg: /^(extmap-allow-mixed)/
          },
          {
            // a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32
            push: "crypto",
            reg: /^crypto:(\d*) ([\w_]*) (\S*)(?: (\S*))?/,
            names: ["id", "suite", "config", "sessionConfig"],
            format: function(o2) {
              return o2.sessionConfig != null ? "crypto:%d %s %s %s" : "crypto:%d %s %s";
            }
          },
          {
            // a=setup:actpass
            name: "setup",
            reg: /^setup:(\w*)/,
            format: "setup:%s"
          },
          {
            // a=connection:new
            name: "connectionType",
            reg: /^connection:(new|existing)/,
            format: "connection:%s"
          },
          {
            // a=mid:1
            name: "mid",
            reg: /^mid:([^\s]*)/,
            format: "mid:%s"
          },
          {
            // a=msid:0c8b064d-d807-43b4-b434-f92a889d8587 98178685-d409-46e0-8e16-7ef0db0db64a
            name: "msid",
            reg: /^msid:(.*)/,
            format: "msid:%s"
          },
          {
            // a=ptime:20
            name: "ptime",
            reg: /^ptime:(\d*(?:\.\d*)*)/,
            format: "ptime:%d"
          },
          {
            // a=maxptime:60
            name: "maxptime",
            reg: /^maxptime:(\d*(?:\.\d*)*)/,
            format: "maxptime:%d"
          },
          {
            // a=sendrecv
            name: "direction",
            reg: /^(sendrecv|recvonly|sendonly|inactive)/
          },
          {
            // a=ice-lite
            name: "icelite",
            reg: /^(ice-lite)/
          },
          {
            // a=ice-ufrag:F7gI
            name: "iceUfrag",
            reg: /^ice-ufrag:(\S*)/,
            format: "ice-ufrag:%s"
          },
          {
            // a=ice-pwd:x9cml/YzichV2+XlhiMu8g
            name: "icePwd",
            reg: /^ice-pwd:(\S*)/,
            format: "ice-pwd:%s"
          },
          {
            // a=fingerprint:SHA-1 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33
            name: "fingerprint",
            reg: /^fingerprint:(\S*) (\S*)/,
            names: ["type", "hash"],
            format: "fingerprint:%s %s"
          },
          {
            // a=candidate:0 1 UDP 2113667327 203.0.113.1 54400 typ host
            // a=candidate:1162875081 1 udp 2113937151 192.168.34.75 60017 typ host generation 0 network-id 3 network-cost 10
            // a=candidate:3289912957 2 udp 1845501695 193.84.77.194 60017 typ srflx raddr 192.168.34.75 rport 60017 generation 0 network-id 3 network-cost 10
            // a=candidate:229815620 1 tcp 1518280447 192.168.150.19 60017 typ host tcptype active generation 0 network-id 3 network-cost 10
            // a=candidate:3289912957 2 tcp 1845501695 193.84.77.194 60017 typ srflx raddr 192.168.34.75 rport 60017 tcptype passive generation 0 network-id 3 network-cost 10
            push: "candidates",
            reg: /^candidate:(\S*) (\d*) (\S*) (\d*) (\S*) (\d*) typ (\S*)(?: raddr (\S*) rport (\d*))?(?: tcptype (\S*))?(?: generation (\d*))?(?: network-id (\d*))?(?: network-cost (\d*))?/,
            names: ["foundation", "component", "transport", "priority", "ip", "port", "type", "raddr", "rport", "tcptype", "generation", "network-id", "network-cost"],
            format: function(o2) {
              var str = "candidate:%s %d %s %d %s %d typ %s";
              str += o2.raddr != null ? " raddr %s rport %d" : "%v%v";
              str += o2.tcptype != null ? " tcptype %s" : "%v";
              if (o2.generation != null) {
                str += " generation %d";
              }
              str += o2["network-id"] != null ? " network-id %d" : "%v";
              str += o2["network-cost"] != null ? " network-cost %d" : "%v";
              return str;
            }
          },
          {
            // a=end-of-candidates (keep after the candidates line for readability)
            name: "endOfCandidates",
            reg: /^(end-of-candidates)/
          },
          {
            // a=remote-candidates:1 203.0.113.1 54400 2 203.0.113.1 54401 ...
            name: "remoteCandidates",
            reg: /^remote-candidates:(.*)/,
            format: "remote-candidates:%s"
          },
          {
            // a=ice-options:google-ice
            name: "iceOptions",
            reg: /^ice-options:(\S*)/,
            format: "ice-options:%s"
          },
          {
            // a=ssrc:2566107569 cname:t9YU8M1UxTF8Y1A1
            push: "ssrcs",
            reg: /^ssrc:(\d*) ([\w_-]*)(?::(.*))?/,
            names: ["id", "attribute", "value"],
            format: function(o2) {
              var str = "ssrc:%d";
              if (o2.attribute != null) {
                str += " %s";
                if (o2.value != null) {
                  str += ":%s";
                }
              }
              return str;
            }
          },
          {
            // a=ssrc-group:FEC 1 2
            // a=ssrc-group:FEC-FR 3004364195 1080772241
            push: "ssrcGroups",
            // token-char = %x21 / %x23-27 / %x2A-2B / %x2D-2E / %x30-39 / %x41-5A / %x5E-7E
            reg: /^ssrc-group:([\x21\x23\x24\x25\x26\x27\x2A\x2B\x2D\x2E\w]*) (.*)/,
            names: ["semantics", "ssrcs"],
            format: "ssrc-group:%s %s"
          },
          {
            // a=msid-semantic: WMS Jvlam5X3SX1OP6pn20zWogvaKJz5Hjf9OnlV
            name: "msidSemantic",
            reg: /^msid-semantic:\s?(\w*) (\S*)/,
            names: ["semantic", "token"],
            format: "msid-semantic: %s %s"
            // space after ':' is not accidental
          },
          {
            // a=group:BUNDLE audio video
            push: "groups",
            reg: /^group:(\w*) (.*)/,
            names: ["type", "mids"],
            format: "group:%s %s"
          },
          {
            // a=rtcp-mux
            name: "rtcpMux",
            reg: /^(rtcp-mux)/
          },
          {
            // a=rtcp-rsize
            name: "rtcpRsize",
            reg: /^(rtcp-rsize)/
          },
          {
            // a=sctpmap:5000 webrtc-datachannel 1024
            name: "sctpmap",
            reg: /^sctpmap:([\w_/]*) (\S*)(?: (\S*))?/,
            names: ["sctpmapNumber", "app", "maxMessageSize"],
            format: function(o2) {
              return o2.maxMessageSize != null ? "sctpmap:%s %s %s" : "sctpmap:%s %s";
            }
          },
          {
            // a=x-google-flag:conference
            name: "xGoogleFlag",
            reg: /^x-google-flag:([^\s]*)/,
            format: "x-google-flag:%s"
          },
          {
            // a=rid:1 send max-width=1280;max-height=720;max-fps=30;depend=0
            push: "rids",
            reg: /^rid:([\d\w]+) (\w+)(?: ([\S| ]*))?/,
            names: ["id", "direction", "params"],
            format: function(o2) {
              return o2.params ? "rid:%s %s %s" : "rid:%s %s";
            }
          },
          {
            // a=imageattr:97 send [x=800,y=640,sar=1.1,q=0.6] [x=480,y=320] recv [x=330,y=250]
            // a=imageattr:* send [x=800,y=640] recv *
            // a=imageattr:100 recv [x=320,y=240]
            push: "imageattrs",
            reg: new RegExp(
              // a=imageattr:97
              "^imageattr:(\\d+|\\*)[\\s\\t]+(send|recv)[\\s\\t]+(\\*|\\[\\S+\\](?:[\\s\\t]+\\[\\S+\\])*)(?:[\\s\\t]+(recv|send)[\\s\\t]+(\\*|\\[\\S+\\](?:[\\s\\t]+\\[\\S+\\])*))?"
            ),
            names: ["pt", "dir1", "attrs1", "dir2", "attrs2"],
            format: function(o2) {
              return "imageattr:%s %s %s" + (o2.dir2 ? " %s %s" : "");
            }
          },
          {
            // a=simulcast:send 1,2,3;~4,~5 recv 6;~7,~8
            // a=simulcast:recv 1;4,5 send 6;7
            name: "simulcast",
            reg: new RegExp(
              // a=simulcast:
              "^simulcast:(send|recv) ([a-zA-Z0-9\\-_~;,]+)(?:\\s?(send|recv) ([a-zA-Z0-9\\-_~;,]+))?$"
            ),
            names: ["dir1", "list1", "dir2", "list2"],
            format: function(o2) {
              return "simulcast:%s %s" + (o2.dir2 ? " %s %s" : "");
            }
          },
          {
            // old simulcast draft 03 (implemented by Firefox)
            //   https://tools.ietf.org/html/draft-ietf-mmusic-sdp-simulcast-03
            // a=simulcast: recv pt=97;98 send pt=97
            // a=simulcast: send rid=5;6;7 paused=6,7
            name: "simulcast_03",
            reg: /^simulcast:[\s\t]+([\S+\s\t]+)$/,
            names: ["value"],
            format: "simulcast: %s"
          },
          {
            // a=framerate:25
            // a=framerate:29.97
            name: "framerate",
            reg: /^framerate:(\d+(?:$|\.\d+))/,
            format: "framerate:%s"
          },
          {
            // RFC4570
            // a=source-filter: incl IN IP4 239.5.2.31 10.1.15.5
            name: "sourceFilter",
            reg: /^source-filter: *(excl|incl) (\S*) (IP4|IP6|\*) (\S*) (.*)/,
            names: ["filterMode", "netType", "addressTypes", "destAddress", "srcList"],
            format: "source-filter: %s %s %s %s %s"
          },
          {
            // a=bundle-only
            name: "bundleOnly",
            reg: /^(bundle-only)/
          },
          {
            // a=label:1
            name: "label",
            reg: /^label:(.+)/,
            format: "label:%s"
          },
          {
            // RFC version 26 for SCTP over DTLS
            // https://tools.ietf.org/html/draft-ietf-mmusic-sctp-sdp-26#section-5
            name: "sctpPort",
            reg: /^sctp-port:(\d+)$/,
            format: "sctp-port:%s"
          },
          {
            // RFC version 26 for SCTP over DTLS
            // https://tools.ietf.org/html/draft-ietf-mmusic-sctp-sdp-26#section-6
            name: "maxMessageSize",
            reg: /^max-message-size:(\d+)$/,
            format: "max-message-size:%s"
          },
          {
            // RFC7273
            // a=ts-refclk:ptp=IEEE1588-2008:39-A7-94-FF-FE-07-CB-D0:37
            push: "tsRefClocks",
            reg: /^ts-refclk:([^\s=]*)(?:=(\S*))?/,
            names: ["clksrc", "clksrcExt"],
            format: function(o2) {
              return "ts-refclk:%s" + (o2.clksrcExt != null ? "=%s" : "");
            }
          },
          {
            // RFC7273
            // a=mediaclk:direct=963214424
            name: "mediaClk",
            reg: /^mediaclk:(?:id=(\S*))? *([^\s=]*)(?:=(\S*))?(?: *rate=(\d+)\/(\d+))?/,
            names: ["id", "mediaClockName", "mediaClockValue", "rateNumerator", "rateDenominator"],
            format: function(o2) {
              var str = "mediaclk:";
              str += o2.id != null ? "id=%s %s" : "%v%s";
              str += o2.mediaClockValue != null ? "=%s" : "";
              str += o2.rateNumerator != null ? " rate=%s" : "";
              str += o2.rateDenominator != null ? "/%s" : "";
              return str;
            }
          },
          {
            // a=keywds:keywords
            name: "keywords",
            reg: /^keywds:(.+)$/,
            format: "keywds:%s"
          },
          {
            // a=content:main
            name: "content",
            reg: /^content:(.+)/,
            format: "content:%s"
          },
          // BFCP https://tools.ietf.org/html/rfc4583
          {
            // a=floorctrl:c-s
            name: "bfcpFloorCtrl",
            reg: /^floorctrl:(c-only|s-only|c-s)/,
            format: "floorctrl:%s"
          },
          {
            // a=confid:1
            name: "bfcpConfId",
            reg: /^confid:(\d+)/,
            format: "confid:%s"
          },
          {
            // a=userid:1
            name: "bfcpUserId",
            reg: /^userid:(\d+)/,
            format: "userid:%s"
          },
          {
            // a=floorid:1
            name: "bfcpFloorId",
            reg: /^floorid:(.+) (?:m-stream|mstrm):(.+)/,
            names: ["id", "mStream"],
            format: "floorid:%s mstrm:%s"
          },
          {
            // any a= that we don't understand is kept verbatim on media.invalid
            push: "invalid",
            names: ["value"]
          }
        ]
      };
      Object.keys(grammar).forEach(function(key) {
        var objs = grammar[key];
        objs.forEach(function(obj) {
          if (!obj.reg) {
            obj.reg = /(.*)/;
          }
          if (!obj.format) {
            obj.format = "%s";
          }
        });
      });
    }
  });

  // node_modules/sdp-transform/lib/parser.js
  var require_parser = __commonJS({
    "node_modules/sdp-transform/lib/parser.js"(exports) {
      var toIntIfInt = function(v) {
        return String(Number(v)) === v ? Number(v) : v;
      };
      var attachProperties = function(match, location, names, rawName) {
        if (rawName && !names) {
          location[rawName] = toIntIfInt(match[1]);
        } else {
          for (var i2 = 0; i2 < names.length; i2 += 1) {
            if (match[i2 + 1] != null) {
              location[names[i2]] = toIntIfInt(match[i2 + 1]);
            }
          }
        }
      };
      var parseReg = function(obj, location, content) {
        var needsBlank = obj.name && obj.names;
        if (obj.push && !location[obj.push]) {
          location[obj.push] = [];
        } else if (needsBlank && !location[obj.name]) {
          location[obj.name] = {};
        }
        var keyLocation = obj.push ? {} : (
          // blank object that will be pushed
          needsBlank ? location[obj.name] : location
        );
        attachProperties(content.match(obj.reg), keyLocation, obj.names, obj.name);
        if (obj.push) {
          location[obj.push].push(keyLocation);
        }
      };
      var grammar = require_grammar();
      var validLine = RegExp.prototype.test.bind(/^([a-z])=(.*)/);
      exports.parse = function(sdp) {
        var session = {}, media = [], location = session;
        sdp.split(/(\r\n|\r|\n)/).filter(validLine).forEach(function(l) {
          var type = l[0];
          var content = l.slice(2);
          if (type === "m") {
            media.push({ rtp: [], fmtp: [] });
            location = media[media.length - 1];
          }
          for (var j = 0; j < (grammar[type] || []).length; j += 1) {
            var obj = grammar[type][j];
            if (obj.reg.test(content)) {
              return parseReg(obj, location, content);
            }
          }
        });
        session.media = media;
        return session;
      };
      var paramReducer = function(acc, expr) {
        var s = expr.split(/=(.+)/, 2);
        if (s.length === 2) {
          acc[s[0]] = toIntIfInt(s[1]);
        } else if (s.length === 1 && expr.length > 1) {
          acc[s[0]] = void 0;
        }
        return acc;
      };
      exports.parseParams = function(str) {
        return str.split(/;\s?/).reduce(paramReducer, {});
      };
      exports.parseFmtpConfig = exports.parseParams;
      exports.parsePayloads = function(str) {
        return str.toString().split(" ").map(Number);
      };
      exports.parseRemoteCandidates = function(str) {
        var candidates = [];
        var parts = str.split(" ").map(toIntIfInt);
        for (var i2 = 0; i2 < parts.length; i2 += 3) {
          candidates.push({
            component: parts[i2],
            ip: parts[i2 + 1],
            port: parts[i2 + 2]
          });
        }
        return candidates;
      };
      exports.parseImageAttributes = function(str) {
        return str.split(" ").map(function(item) {
          return item.substring(1, item.length - 1).split(",").reduce(paramReducer, {});
        });
      };
      exports.parseSimulcastStreamList = function(str) {
        return str.split(";").map(function(stream) {
          return stream.split(",").map(function(format) {
            var scid, paused = false;
            if (format[0] !== "~") {
              scid = toIntIfInt(format);
            } else {
              scid = toIntIfInt(format.substring(1, format.length));
              paused = true;
            }
            return {
              scid,
              paused
            };
          });
        });
      };
    }
  });

  // node_modules/sdp-transform/lib/writer.js
  var require_writer = __commonJS({
    "node_modules/sdp-transform/lib/writer.js"(exports, module) {
      var grammar = require_grammar();
      var formatRegExp = /%[sdv%]/g;
      var format = function(formatStr) {
        var i2 = 1;
        var args = arguments;
        var len = args.length;
        return formatStr.replace(formatRegExp, function(x) {
          if (i2 >= len) {
            return x;
          }
          var arg = args[i2];
          i2 += 1;
          switch (x) {
            case "%%":
              return "%";
            case "%s":
              return String(arg);
            case "%d":
              return Number(arg);
            case "%v":
              return "";
          }
        });
      };
      var makeLine = function(type, obj, location) {
        var str = obj.format instanceof Function ? obj.format(obj.push ? location : location[obj.name]) : obj.format;
        var args = [type + "=" + str];
        if (obj.names) {
          for (var i2 = 0; i2 < obj.names.length; i2 += 1) {
            var n2 = obj.names[i2];
            if (obj.name) {
              args.push(location[obj.name][n2]);
            } else {
              args.push(location[obj.names[i2]]);
            }
          }
        } else {
          args.push(location[obj.name]);
        }
        return format.apply(null, args);
      };
      var defaultOuterOrder = [
        "v",
        "o",
        "s",
        "i",
        "u",
        "e",
        "p",
        "c",
        "b",
        "t",
        "r",
        "z",
        "a"
      ];
      var defaultInnerOrder = ["i", "c", "b", "a"];
      module.exports = function(session, opts) {
        opts = opts || {};
        if (session.version == null) {
          session.version = 0;
        }
        if (session.name == null) {
          session.name = " ";
        }
        session.media.forEach(function(mLine) {
          if (mLine.payloads == null) {
            mLine.payloads = "";
          }
        });
        var outerOrder = opts.outerOrder || defaultOuterOrder;
        var innerOrder = opts.innerOrder || defaultInnerOrder;
        var sdp = [];
        outerOrder.forEach(function(type) {
          grammar[type].forEach(function(obj) {
            if (obj.name in session && session[obj.name] != null) {
              sdp.push(makeLine(type, obj, session));
            } else if (obj.push in session && session[obj.push] != null) {
              session[obj.push].forEach(function(el) {
                sdp.push(makeLine(type, obj, el));
              });
            }
          });
        });
        session.media.forEach(function(mLine) {
          sdp.push(makeLine("m", grammar.m[0], mLine));
          innerOrder.forEach(function(type) {
            grammar[type].forEach(function(obj) {
              if (obj.name in mLine && mLine[obj.name] != null) {
                sdp.push(makeLine(type, obj, mLine));
              } else if (obj.push in mLine && mLine[obj.push] != null) {
                mLine[obj.push].forEach(function(el) {
                  sdp.push(makeLine(type, obj, el));
                });
              }
            });
          });
        });
        return sdp.join("\r\n") + "\r\n";
      };
    }
  });

  // node_modules/sdp-transform/lib/index.js
  var require_lib = __commonJS({
    "node_modules/sdp-transform/lib/index.js"(exports) {
      var parser = require_parser();
      var writer = require_writer();
      var grammar = require_grammar();
      exports.grammar = grammar;
      exports.write = writer;
      exports.parse = parser.parse;
      exports.parseParams = parser.parseParams;
      exports.parseFmtpConfig = parser.parseFmtpConfig;
      exports.parsePayloads = parser.parsePayloads;
      exports.parseRemoteCandidates = parser.parseRemoteCandidates;
      exports.parseImageAttributes = parser.parseImageAttributes;
      exports.parseSimulcastStreamList = parser.parseSimulcastStreamList;
    }
  });

  // whip-web-client.js
  var whip_web_client_exports = {};
  __export(whip_web_client_exports, {
    WHIPClient: () => a
  });

  // node_modules/@eyevinn/whip-web-client/dist/whip-client.m.js
  var import_events = __toESM(require_events());
  var import_sdp_transform = __toESM(require_lib());
  function n(e2, t2) {
    return n = Object.setPrototypeOf || function(e3, t3) {
      return e3.__proto__ = t3, e3;
    }, n(e2, t2);
  }
  function o(e2, t2) {
    (null == t2 || t2 > e2.length) && (t2 = e2.length);
    for (var r2 = 0, n2 = new Array(t2); r2 < t2; r2++) n2[r2] = e2[r2];
    return n2;
  }
  function i(e2, t2) {
    var r2 = "undefined" != typeof Symbol && e2[Symbol.iterator] || e2["@@iterator"];
    if (r2) return (r2 = r2.call(e2)).next.bind(r2);
    if (Array.isArray(e2) || (r2 = function(e3, t3) {
      if (e3) {
        if ("string" == typeof e3) return o(e3, t3);
        var r3 = Object.prototype.toString.call(e3).slice(8, -1);
        return "Object" === r3 && e3.constructor && (r3 = e3.constructor.name), "Map" === r3 || "Set" === r3 ? Array.from(e3) : "Arguments" === r3 || /^(?:Ui|I)nt(?:8|16|32)(?:Clamped)?Array$/.test(r3) ? o(e3, t3) : void 0;
      }
    }(e2)) || t2 && e2 && "number" == typeof e2.length) {
      r2 && (e2 = r2);
      var n2 = 0;
      return function() {
        return n2 >= e2.length ? { done: true } : { done: false, value: e2[n2++] };
      };
    }
    throw new TypeError("Invalid attempt to iterate non-iterable instance.\nIn order to be iterable, non-array objects must have a [Symbol.iterator]() method.");
  }
  var c = /* @__PURE__ */ function() {
    function e2() {
    }
    var t2 = e2.prototype;
    return t2.sendOffer = function(e3, t3, r2) {
      var n2 = { "Content-Type": "application/sdp" };
      return t3 && (n2.Authorization = "Bearer " + t3), fetch(e3, { method: "POST", headers: n2, body: r2 });
    }, t2.getConfiguration = function(e3, t3) {
      var r2 = {};
      return t3 && (r2.Authorization = "Bearer " + t3), fetch(e3, { method: "OPTIONS", headers: r2 });
    }, t2.delete = function(e3, t3) {
      var r2 = {};
      return t3 && (r2.Authorization = "Bearer " + t3), fetch(e3, { method: "DELETE", headers: r2 });
    }, t2.updateIce = function(e3, t3, r2, n2) {
      var o2 = { "Content-Type": "application/trickle-ice-sdpfrag", ETag: t3 };
      return n2 && (o2.Authorization = "Bearer " + n2), fetch(e3, { method: "PATCH", headers: o2, body: r2 });
    }, e2;
  }();
  var a = /* @__PURE__ */ function(e2) {
    var o2, a2;
    function s(t2) {
      var r2, n2 = t2.endpoint, o3 = t2.opts, i2 = t2.whipProtocol, a3 = t2.peerConnectionFactory;
      return (r2 = e2.call(this) || this).whipEndpoint = void 0, r2.opts = void 0, r2.peer = void 0, r2.resource = void 0, r2.eTag = void 0, r2.extensions = void 0, r2.resourceResolve = void 0, r2.iceCredentials = void 0, r2.mediaMids = [], r2.whipProtocol = void 0, r2.peerConnectionFactory = void 0, r2.iceGatheringTimeout = void 0, r2.waitingForCandidates = false, r2.whipEndpoint = new URL(n2), r2.opts = o3, r2.opts.noTrickleIce = !!o3.noTrickleIce, r2.whipProtocol = i2 || new c(), r2.peerConnectionFactory = a3 || function(e3) {
        return new RTCPeerConnection(e3);
      }, r2.initPeer(), r2;
    }
    a2 = e2, (o2 = s).prototype = Object.create(a2.prototype), o2.prototype.constructor = o2, n(o2, a2);
    var u = s.prototype;
    return u.initPeer = function() {
      this.peer = this.peerConnectionFactory({ iceServers: this.opts.iceServers || [{ urls: ["stun:stun.l.google.com:19302"] }] }), this.peer.addEventListener("iceconnectionstatechange", this.onIceConnectionStateChange.bind(this)), this.peer.addEventListener("icecandidateerror", this.onIceCandidateError.bind(this)), this.peer.addEventListener("connectionstatechange", this.onConnectionStateChange.bind(this)), this.peer.addEventListener("icecandidate", this.onIceCandidate.bind(this)), this.peer.addEventListener("onicegatheringstatechange", this.onIceGatheringStateChange.bind(this));
    }, u.log = function() {
      var e3;
      this.opts.debug && (e3 = console).log.apply(e3, ["WHIPClient"].concat([].slice.call(arguments)));
    }, u.error = function() {
      var e3;
      (e3 = console).error.apply(e3, ["WHIPClient"].concat([].slice.call(arguments)));
    }, u.makeSDPTransformCandidate = function(e3) {
      var t2;
      return { foundation: e3.foundation, component: "rtp" === e3.component ? 0 : 1, transport: e3.protocol.toString(), priority: e3.priority, ip: e3.address, port: e3.port, type: e3.type.toString(), raddr: null == e3 ? void 0 : e3.relatedAddress, rport: null == e3 ? void 0 : e3.relatedPort, tcptype: null == e3 || null == (t2 = e3.tcpType) ? void 0 : t2.toString() };
    }, u.makeTrickleIceSdpFragment = function(e3) {
      if (this.iceCredentials && 0 !== this.mediaMids.length) {
        for (var r2, n2 = { media: [], iceUfrag: this.iceCredentials.ufrag, icePwd: this.iceCredentials.pwd }, o3 = i(this.mediaMids); !(r2 = o3()).done; ) {
          var c2 = { type: "audio", port: 9, protocol: "RTP/AVP", payloads: "0", rtp: [], fmtp: [], mid: r2.value, candidates: [this.makeSDPTransformCandidate(e3)] };
          n2.media.push(c2);
        }
        return (0, import_sdp_transform.write)(n2).replace("v=0\r\ns= \r\n", "");
      }
      this.error("Missing local SDP meta data, cannot send trickle ICE candidate");
    }, u.onIceCandidate = function(e3) {
      try {
        var t2 = this;
        if ("icecandidate" !== e3.type) return Promise.resolve();
        var r2 = e3.candidate;
        return r2 ? Promise.resolve(function() {
          if (t2.supportTrickleIce()) {
            var e4 = t2.makeTrickleIceSdpFragment(r2);
            return Promise.resolve(t2.getResourceUrl()).then(function(r3) {
              return Promise.resolve(t2.whipProtocol.updateIce(r3, t2.eTag, e4, t2.opts.authkey)).then(function(e5) {
                e5.ok || (t2.log("Trickle ICE not supported by endpoint"), t2.opts.noTrickleIce = true);
              });
            });
          }
          t2.log(r2.candidate);
        }()) : Promise.resolve();
      } catch (e4) {
        return Promise.reject(e4);
      }
    }, u.onConnectionStateChange = function(e3) {
      try {
        var t2 = this;
        t2.log("PeerConnectionState", t2.peer.connectionState);
        var r2 = function() {
          if ("failed" === t2.peer.connectionState) return Promise.resolve(t2.destroy()).then(function() {
          });
        }();
        return Promise.resolve(r2 && r2.then ? r2.then(function() {
        }) : void 0);
      } catch (e4) {
        return Promise.reject(e4);
      }
    }, u.onIceConnectionStateChange = function(e3) {
      this.log("IceConnectionState", this.peer.iceConnectionState);
    }, u.onIceCandidateError = function(e3) {
      this.log("IceCandidateError", e3);
    }, u.onIceGatheringStateChange = function(e3) {
      "complete" === this.peer.iceGatheringState && !this.supportTrickleIce() && this.waitingForCandidates && this.onDoneWaitingForCandidates();
    }, u.getICEConnectionState = function() {
      return this.peer.iceConnectionState;
    }, u.startSdpExchange = function() {
      try {
        var e3 = this;
        return Promise.resolve(e3.peer.createOffer({ offerToReceiveAudio: false, offerToReceiveVideo: false })).then(function(t2) {
          var n2 = t2.sdp && (0, import_sdp_transform.parse)(t2.sdp);
          if (!n2) return Promise.reject();
          n2.iceUfrag && n2.icePwd ? e3.iceCredentials = { pwd: n2.icePwd, ufrag: n2.iceUfrag } : 0 !== n2.media.length && n2.media[0].iceUfrag && n2.media[0].icePwd && (e3.iceCredentials = { pwd: n2.media[0].icePwd, ufrag: n2.media[0].iceUfrag });
          for (var o3, c2 = i(n2.media); !(o3 = c2()).done; ) {
            var a3 = o3.value;
            a3.mid && e3.mediaMids.push(a3.mid);
          }
          return Promise.resolve(e3.peer.setLocalDescription(t2)).then(function() {
            var t3 = function() {
              if (e3.supportTrickleIce()) return Promise.resolve(e3.sendOffer()).then(function() {
              });
              var t4;
              e3.waitingForCandidates = true, e3.iceGatheringTimeout = setTimeout(e3.onIceGatheringTimeout.bind(e3), (null == (t4 = e3.opts) ? void 0 : t4.timeout) || 2e3);
            }();
            if (t3 && t3.then) return t3.then(function() {
            });
          });
        });
      } catch (e4) {
        return Promise.reject(e4);
      }
    }, u.onIceGatheringTimeout = function() {
      this.log("onIceGatheringTimeout"), !this.supportTrickleIce() && this.waitingForCandidates && this.onDoneWaitingForCandidates();
    }, u.onDoneWaitingForCandidates = function() {
      try {
        var e3 = this;
        return e3.waitingForCandidates = false, clearTimeout(e3.iceGatheringTimeout), Promise.resolve(e3.sendOffer()).then(function() {
        });
      } catch (e4) {
        return Promise.reject(e4);
      }
    }, u.sendOffer = function() {
      try {
        var e3 = this;
        return e3.log("Sending offer"), e3.log(e3.peer.localDescription.sdp), Promise.resolve(e3.whipProtocol.sendOffer(e3.whipEndpoint.toString(), e3.opts.authkey, e3.peer.localDescription.sdp)).then(function(t2) {
          var r2 = function() {
            if (t2.ok) {
              e3.resource = t2.headers.get("Location"), e3.resource && !e3.resource.match(/^http/) && (e3.resource = new URL(e3.resource, e3.whipEndpoint).toString()), e3.log("WHIP Resource", e3.resource), e3.eTag = t2.headers.get("ETag"), e3.log("eTag", e3.eTag);
              var r3 = t2.headers.get("Link");
              return e3.extensions = r3 ? r3.split(",").map(function(e4) {
                return e4.trimStart();
              }) : [], e3.log("WHIP Resource Extensions", e3.extensions), e3.resourceResolve && (e3.resourceResolve(e3.resource), e3.resourceResolve = null), Promise.resolve(t2.text()).then(function(t3) {
                return Promise.resolve(e3.peer.setRemoteDescription({ type: "answer", sdp: t3 })).then(function() {
                });
              });
            }
            var n2 = e3.error, o3 = t2.status;
            return Promise.resolve(t2.text()).then(function(t3) {
              n2.call(e3, "IceCandidate", "Failed to setup stream connection with endpoint", o3, t3);
            });
          }();
          if (r2 && r2.then) return r2.then(function() {
          });
        });
      } catch (e4) {
        return Promise.reject(e4);
      }
    }, u.doFetchICEFromEndpoint = function() {
      try {
        var e3 = this, t2 = [];
        return Promise.resolve(e3.whipProtocol.getConfiguration(e3.whipEndpoint.toString(), e3.opts.authkey)).then(function(e4) {
          return e4.ok && e4.headers.forEach(function(e5, r2) {
            if ("link" == r2) {
              var n2 = function(e6) {
                var t3;
                if (e6.match(/rel="ice-server"/)) if (e6.match(/^stun:/)) {
                  var r3 = e6.match(/^(stun:\S+);/)[1];
                  r3 && (t3 = { urls: r3 });
                } else e6.match(/^turn:/) && e6.split(";").forEach(function(e7) {
                  if (e7.match(/^turn:/)) {
                    var r4 = e7.match(/^(turn:\S+)/);
                    t3 = { urls: r4[1] };
                  } else if (e7.match(/^\s*username[=:]/)) {
                    var n3 = e7.match(/^\s*username[=:]\s*"*([^"]+)/);
                    t3.username = n3[1];
                  } else if (e7.match(/^\s*credential[=:]/)) {
                    var o3 = e7.match(/^\s*credential[=:]\s*"*([^"]+)/);
                    t3.credential = o3[1];
                  }
                });
                return t3;
              }(e5);
              n2 && t2.push(n2);
            }
          }), t2;
        });
      } catch (e4) {
        return Promise.reject(e4);
      }
    }, u.supportTrickleIce = function() {
      return !this.opts.noTrickleIce;
    }, u.setIceServersFromEndpoint = function() {
      try {
        var e3 = this, t2 = function() {
          if (e3.opts.authkey) return e3.log("Fetching ICE config from endpoint"), Promise.resolve(e3.doFetchICEFromEndpoint()).then(function(t3) {
            e3.peer.setConfiguration({ iceServers: t3 });
          });
          e3.error("No authkey is provided so cannot fetch ICE config from endpoint.");
        }();
        return Promise.resolve(t2 && t2.then ? t2.then(function() {
        }) : void 0);
      } catch (e4) {
        return Promise.reject(e4);
      }
    }, u.ingest = function(e3) {
      try {
        var t2 = function() {
          return Promise.resolve(r2.startSdpExchange()).then(function() {
          });
        }, r2 = this;
        r2.peer || r2.initPeer(), e3.getTracks().forEach(function(t3) {
          return r2.peer.addTrack(t3, e3);
        });
        var n2 = function() {
          if (!r2.opts.noTrickleIce) return Promise.resolve(r2.whipProtocol.getConfiguration(r2.whipEndpoint.toString(), r2.opts.authkey)).then(function(e4) {
            var t3 = false;
            e4.headers.get("access-control-allow-methods") && (t3 = e4.headers.get("access-control-allow-methods").split(",").map(function(e5) {
              return e5.trim();
            }).includes("PATCH")), t3 ? (r2.opts.noTrickleIce = false, r2.log("Endpoint says it supports Trickle ICE as PATCH is an allowed method")) : (r2.opts.noTrickleIce = true, r2.log("Endpoint does not support Trickle ICE"));
          });
        }();
        return Promise.resolve(n2 && n2.then ? n2.then(t2) : t2());
      } catch (e4) {
        return Promise.reject(e4);
      }
    }, u.destroy = function() {
      try {
        var e3 = this;
        return Promise.resolve(e3.getResourceUrl()).then(function(t2) {
          return Promise.resolve(e3.whipProtocol.delete(t2, e3.opts.authkey).catch(function(t3) {
            return e3.error("destroy()", t3);
          })).then(function() {
            var t3 = e3.peer.getSenders();
            t3 && t3.forEach(function(e4) {
              e4.track.stop();
            }), e3.peer.close(), e3.resource = null, e3.peer = null;
          });
        });
      } catch (e4) {
        return Promise.reject(e4);
      }
    }, u.getResourceUrl = function() {
      var e3 = this;
      return this.resource ? Promise.resolve(this.resource) : new Promise(function(t2) {
        e3.resourceResolve = t2;
      });
    }, u.getResourceExtensions = function() {
      try {
        var e3 = this;
        return Promise.resolve(e3.getResourceUrl()).then(function() {
          return e3.extensions;
        });
      } catch (e4) {
        return Promise.reject(e4);
      }
    }, s;
  }(import_events.EventEmitter);
  return __toCommonJS(whip_web_client_exports);
})();
