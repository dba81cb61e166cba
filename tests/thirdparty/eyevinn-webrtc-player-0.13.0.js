var EyevinnWebRTCPlayer = (() => {
  var __create = Object.create;
  var __defProp = Object.defineProperty;
  var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
  var __getOwnPropNames = Object.getOwnPropertyNames;
  var __getProtoOf = Object.getPrototypeOf;
  var __hasOwnProp = Object.prototype.hasOwnProperty;
  var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
  var __esm = (fn, res) => function __init() {
    return fn && (res = (0, fn[__getOwnPropNames(fn)[0]])(fn = 0)), res;
  };
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
  var __publicField = (obj, key, value) => __defNormalProp(obj, typeof key !== "symbol" ? key + "" : key, value);

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

  // node_modules/@eyevinn/video-event-filter/node_modules/mitt/dist/mitt.js
  var require_mitt = __commonJS({
    "node_modules/@eyevinn/video-event-filter/node_modules/mitt/dist/mitt.js"(exports, module) {
      module.exports = function(n2) {
        return { all: n2 = n2 || /* @__PURE__ */ new Map(), on: function(e4, t2) {
          var i2 = n2.get(e4);
          i2 && i2.push(t2) || n2.set(e4, [t2]);
        }, off: function(e4, t2) {
          var i2 = n2.get(e4);
          i2 && i2.splice(i2.indexOf(t2) >>> 0, 1);
        }, emit: function(e4, t2) {
          (n2.get(e4) || []).slice().map(function(n3) {
            n3(t2);
          }), (n2.get("*") || []).slice().map(function(n3) {
            n3(e4, t2);
          });
        } };
      };
    }
  });

  // node_modules/@eyevinn/video-event-filter/dist/index.js
  var require_dist = __commonJS({
    "node_modules/@eyevinn/video-event-filter/dist/index.js"(exports, module) {
      var $g5Y9E$mitt = require_mitt();
      function $parcel$export(e4, n2, v, s2) {
        Object.defineProperty(e4, n2, { get: v, set: s2, enumerable: true, configurable: true });
      }
      function $parcel$interopDefault(a2) {
        return a2 && a2.__esModule ? a2.default : a2;
      }
      $parcel$export(module.exports, "VideoEventFilter", () => $fcdb6cf3608c4662$exports.VideoEventFilter);
      $parcel$export(module.exports, "PlayerEvents", () => $fcdb6cf3608c4662$exports.PlayerEvents);
      $parcel$export(module.exports, "PlayerState", () => $fcdb6cf3608c4662$exports.PlayerState);
      var $fcdb6cf3608c4662$exports = {};
      $parcel$export($fcdb6cf3608c4662$exports, "PlayerState", () => $fcdb6cf3608c4662$export$e3425b961a6a8509, (v) => $fcdb6cf3608c4662$export$e3425b961a6a8509 = v);
      $parcel$export($fcdb6cf3608c4662$exports, "PlayerEvents", () => $fcdb6cf3608c4662$export$5013cbcdb4d9878b, (v) => $fcdb6cf3608c4662$export$5013cbcdb4d9878b = v);
      $parcel$export($fcdb6cf3608c4662$exports, "VideoEventFilter", () => $fcdb6cf3608c4662$export$68ce463a75cf738d, (v) => $fcdb6cf3608c4662$export$68ce463a75cf738d = v);
      var $516c8d13080d4552$export$691d3e4b1045a188 = function() {
        function $516c8d13080d4552$export$691d3e4b1045a1882() {
          this.emitter = $parcel$interopDefault($g5Y9E$mitt)();
        }
        $516c8d13080d4552$export$691d3e4b1045a1882.prototype.addEventListener = function(event, handler) {
          this.emitter.on.apply(this, [
            event,
            handler
          ]);
        };
        $516c8d13080d4552$export$691d3e4b1045a1882.prototype.removeEventListener = function(event, handler) {
          if (this.emitter) this.emitter.off.apply(this, [
            event,
            handler
          ]);
        };
        $516c8d13080d4552$export$691d3e4b1045a1882.prototype.clear = function() {
          this.emitter.all.clear();
        };
        $516c8d13080d4552$export$691d3e4b1045a1882.prototype.emit = function(event, data) {
          if (this.emitter) this.emitter.emit.apply(this, [
            event,
            data
          ]);
        };
        $516c8d13080d4552$export$691d3e4b1045a1882.prototype.destroy = function() {
          this.emitter.all.clear();
          this.emitter = null;
        };
        return $516c8d13080d4552$export$691d3e4b1045a1882;
      }();
      var $fcdb6cf3608c4662$var$__extends = /* @__PURE__ */ function() {
        var extendStatics = function(d1, b1) {
          extendStatics = Object.setPrototypeOf || {
            __proto__: []
          } instanceof Array && function(d, b) {
            d.__proto__ = b;
          } || function(d, b) {
            for (var p in b) if (Object.prototype.hasOwnProperty.call(b, p)) d[p] = b[p];
          };
          return extendStatics(d1, b1);
        };
        return function(d, b) {
          if (typeof b !== "function" && b !== null) throw new TypeError("Class extends value " + String(b) + " is not a constructor or null");
          extendStatics(d, b);
          function __() {
            this.constructor = d;
          }
          d.prototype = b === null ? Object.create(b) : (__.prototype = b.prototype, new __());
        };
      }();
      var $fcdb6cf3608c4662$export$e3425b961a6a8509;
      (function($fcdb6cf3608c4662$export$e3425b961a6a85092) {
        $fcdb6cf3608c4662$export$e3425b961a6a85092["Idle"] = "idle";
        $fcdb6cf3608c4662$export$e3425b961a6a85092["Loading"] = "loading";
        $fcdb6cf3608c4662$export$e3425b961a6a85092["Playing"] = "playing";
        $fcdb6cf3608c4662$export$e3425b961a6a85092["Paused"] = "paused";
        $fcdb6cf3608c4662$export$e3425b961a6a85092["Buffering"] = "buffering";
        $fcdb6cf3608c4662$export$e3425b961a6a85092["Seeking"] = "seeking";
        $fcdb6cf3608c4662$export$e3425b961a6a85092["Ended"] = "ended";
      })($fcdb6cf3608c4662$export$e3425b961a6a8509 || ($fcdb6cf3608c4662$export$e3425b961a6a8509 = {}));
      var $fcdb6cf3608c4662$export$5013cbcdb4d9878b;
      (function($fcdb6cf3608c4662$export$5013cbcdb4d9878b2) {
        $fcdb6cf3608c4662$export$5013cbcdb4d9878b2["Loading"] = "loading";
        $fcdb6cf3608c4662$export$5013cbcdb4d9878b2["Loaded"] = "loaded";
        $fcdb6cf3608c4662$export$5013cbcdb4d9878b2["Play"] = "play";
        $fcdb6cf3608c4662$export$5013cbcdb4d9878b2["Resume"] = "resume";
        $fcdb6cf3608c4662$export$5013cbcdb4d9878b2["Pause"] = "pause";
        $fcdb6cf3608c4662$export$5013cbcdb4d9878b2["Seeking"] = "seeking";
        $fcdb6cf3608c4662$export$5013cbcdb4d9878b2["Seeked"] = "seeked";
        $fcdb6cf3608c4662$export$5013cbcdb4d9878b2["Buffering"] = "buffering";
        $fcdb6cf3608c4662$export$5013cbcdb4d9878b2["Buffered"] = "buffered";
        $fcdb6cf3608c4662$export$5013cbcdb4d9878b2["TimeUpdate"] = "timeupdate";
        $fcdb6cf3608c4662$export$5013cbcdb4d9878b2["Ended"] = "ended";
        $fcdb6cf3608c4662$export$5013cbcdb4d9878b2["Error"] = "error";
      })($fcdb6cf3608c4662$export$5013cbcdb4d9878b || ($fcdb6cf3608c4662$export$5013cbcdb4d9878b = {}));
      var $fcdb6cf3608c4662$var$NetworkState;
      (function(NetworkState) {
        NetworkState[NetworkState["NETWORK_EMPTY"] = 0] = "NETWORK_EMPTY";
        NetworkState[NetworkState["NETWORK_IDLE"] = 1] = "NETWORK_IDLE";
        NetworkState[NetworkState["NETWORK_LOADING"] = 2] = "NETWORK_LOADING";
        NetworkState[NetworkState["NETWORK_NO_SOURCE"] = 3] = "NETWORK_NO_SOURCE";
      })($fcdb6cf3608c4662$var$NetworkState || ($fcdb6cf3608c4662$var$NetworkState = {}));
      var $fcdb6cf3608c4662$var$ReadyState;
      (function(ReadyState) {
        ReadyState[ReadyState["HAVE_NOTHING"] = 0] = "HAVE_NOTHING";
        ReadyState[ReadyState["HAVE_METADATA"] = 1] = "HAVE_METADATA";
        ReadyState[ReadyState["HAVE_CURRENT_DATA"] = 2] = "HAVE_CURRENT_DATA";
        ReadyState[ReadyState["HAVE_FUTURE_DATA"] = 3] = "HAVE_FUTURE_DATA";
        ReadyState[ReadyState["HAVE_ENOUGH_DATA"] = 4] = "HAVE_ENOUGH_DATA";
      })($fcdb6cf3608c4662$var$ReadyState || ($fcdb6cf3608c4662$var$ReadyState = {}));
      function $fcdb6cf3608c4662$var$getInitialState(videoElement) {
        if (videoElement.readyState === $fcdb6cf3608c4662$var$ReadyState.HAVE_NOTHING && videoElement.networkState === $fcdb6cf3608c4662$var$NetworkState.NETWORK_EMPTY) return $fcdb6cf3608c4662$export$e3425b961a6a8509.Idle;
        else if (videoElement.networkState === $fcdb6cf3608c4662$var$NetworkState.NETWORK_LOADING) return $fcdb6cf3608c4662$export$e3425b961a6a8509.Loading;
        else if (!videoElement.ended) return videoElement.paused ? $fcdb6cf3608c4662$export$e3425b961a6a8509.Paused : $fcdb6cf3608c4662$export$e3425b961a6a8509.Playing;
        return $fcdb6cf3608c4662$export$e3425b961a6a8509.Ended;
      }
      var $fcdb6cf3608c4662$export$68ce463a75cf738d = function(_super) {
        $fcdb6cf3608c4662$var$__extends($fcdb6cf3608c4662$export$68ce463a75cf738d2, _super);
        function $fcdb6cf3608c4662$export$68ce463a75cf738d2(videoElement) {
          var _this = _super.call(this) || this;
          _this.listeners = [];
          _this.videoElement = videoElement;
          if (typeof videoElement === "string") _this.videoElement = document.querySelector(videoElement);
          _this.state = $fcdb6cf3608c4662$var$getInitialState(videoElement);
          _this.setupEventListeners();
          return _this;
        }
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.setupEventListeners = function() {
          this.addListener("loadstart", this.onLoading);
          this.addListener("loadeddata", this.onLoaded);
          this.addListener("playing", this.onPlaying);
          this.addListener("pause", this.onPause);
          this.addListener("seeking", this.onSeeking);
          this.addListener("seeked", this.onSeeked);
          this.addListener("waiting", this.onBuffering);
          this.addListener("timeupdate", this.onTimeUpdate);
          this.addListener("error", this.onError);
          this.addListener("ended", this.onEnded);
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.addListener = function(type, handler) {
          var boundHandler = handler.bind(this);
          this.videoElement.addEventListener(type, boundHandler);
          this.listeners.push({
            type,
            handler: boundHandler
          });
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.onLoading = function() {
          if (this.state === $fcdb6cf3608c4662$export$e3425b961a6a8509.Loading) return;
          this.setState($fcdb6cf3608c4662$export$e3425b961a6a8509.Loading);
          this.emit($fcdb6cf3608c4662$export$5013cbcdb4d9878b.Loading);
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.onLoaded = function() {
          if (this.state === $fcdb6cf3608c4662$export$e3425b961a6a8509.Loading) this.emit($fcdb6cf3608c4662$export$5013cbcdb4d9878b.Loaded);
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.onPlaying = function() {
          if (this.state === $fcdb6cf3608c4662$export$e3425b961a6a8509.Ended) this.setState($fcdb6cf3608c4662$export$e3425b961a6a8509.Loading);
          if ([
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Loading,
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Paused
          ].includes(this.state)) {
            if (this.state === $fcdb6cf3608c4662$export$e3425b961a6a8509.Loading) this.emit($fcdb6cf3608c4662$export$5013cbcdb4d9878b.Play);
            if (this.state === $fcdb6cf3608c4662$export$e3425b961a6a8509.Paused) {
              this.lastState = $fcdb6cf3608c4662$export$e3425b961a6a8509.Paused;
              this.emit($fcdb6cf3608c4662$export$5013cbcdb4d9878b.Resume);
            }
            this.setState($fcdb6cf3608c4662$export$e3425b961a6a8509.Playing, true);
          }
          if (this.state === $fcdb6cf3608c4662$export$e3425b961a6a8509.Buffering) this.onBuffered();
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.onPause = function() {
          var _this = this;
          if (this.state !== $fcdb6cf3608c4662$export$e3425b961a6a8509.Playing) return;
          clearTimeout(this.pauseDebounce);
          this.pauseDebounce = window.setTimeout(function() {
            _this.emit($fcdb6cf3608c4662$export$5013cbcdb4d9878b.Pause);
            _this.setState($fcdb6cf3608c4662$export$e3425b961a6a8509.Paused, true);
          }, 200);
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.onSeeking = function() {
          if ([
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Loading,
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Seeking,
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Ended
          ].includes(this.state)) return;
          clearTimeout(this.pauseDebounce);
          this.setState($fcdb6cf3608c4662$export$e3425b961a6a8509.Seeking, true);
          this.emit($fcdb6cf3608c4662$export$5013cbcdb4d9878b.Seeking);
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.onSeeked = function() {
          if (this.state !== $fcdb6cf3608c4662$export$e3425b961a6a8509.Seeking) return;
          this.setState(this.lastState, true);
          this.emit($fcdb6cf3608c4662$export$5013cbcdb4d9878b.Seeked);
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.onBuffering = function() {
          if ([
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Loading,
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Buffering,
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Seeking,
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Ended
          ].includes(this.state)) return;
          this.setState($fcdb6cf3608c4662$export$e3425b961a6a8509.Buffering, true);
          this.emit($fcdb6cf3608c4662$export$5013cbcdb4d9878b.Buffering);
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.onBuffered = function() {
          if (this.state !== $fcdb6cf3608c4662$export$e3425b961a6a8509.Buffering) return;
          this.setState(this.lastState, true);
          this.emit($fcdb6cf3608c4662$export$5013cbcdb4d9878b.Buffered);
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.onTimeUpdate = function() {
          if (this.videoElement.seeking || [
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Loading,
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Paused,
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Seeking,
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Buffering,
            $fcdb6cf3608c4662$export$e3425b961a6a8509.Ended
          ].includes(this.state)) return;
          this.emit($fcdb6cf3608c4662$export$5013cbcdb4d9878b.TimeUpdate);
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.onEnded = function() {
          clearTimeout(this.pauseDebounce);
          if (this.state === $fcdb6cf3608c4662$export$e3425b961a6a8509.Ended) return;
          this.setState($fcdb6cf3608c4662$export$e3425b961a6a8509.Ended);
          this.emit($fcdb6cf3608c4662$export$5013cbcdb4d9878b.Ended);
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.onError = function() {
          if (this.state === $fcdb6cf3608c4662$export$e3425b961a6a8509.Ended) return;
          this.emit($fcdb6cf3608c4662$export$5013cbcdb4d9878b.Error, this.videoElement.error);
          this.onEnded();
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.getState = function() {
          return this.state;
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.setState = function(state, updateLast) {
          if (updateLast) this.updateLastState(this.state);
          this.state = state;
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.updateLastState = function(state) {
          if (state) this.lastState = state;
          else this.lastState = this.state;
        };
        $fcdb6cf3608c4662$export$68ce463a75cf738d2.prototype.destroy = function() {
          var _this = this;
          this.listeners.forEach(function(_a) {
            var type = _a.type, handler = _a.handler;
            _this.videoElement.removeEventListener(type, handler);
          });
          _super.prototype.destroy.call(this);
        };
        return $fcdb6cf3608c4662$export$68ce463a75cf738d2;
      }($516c8d13080d4552$export$691d3e4b1045a188);
    }
  });

  // node_modules/@dailymotion/vast-client/dist/vast-client.min.js
  var require_vast_client_min = __commonJS({
    "node_modules/@dailymotion/vast-client/dist/vast-client.min.js"(exports, module) {
      !function(e4, t2) {
        "object" == typeof exports && "undefined" != typeof module ? t2(exports) : "function" == typeof define && define.amd ? define(["exports"], t2) : t2((e4 = "undefined" != typeof globalThis ? globalThis : e4 || self).VAST = {});
      }(exports, function(e4) {
        "use strict";
        function t2(e5, t3) {
          var r3 = Object.keys(e5);
          if (Object.getOwnPropertySymbols) {
            var i3 = Object.getOwnPropertySymbols(e5);
            t3 && (i3 = i3.filter(function(t4) {
              return Object.getOwnPropertyDescriptor(e5, t4).enumerable;
            })), r3.push.apply(r3, i3);
          }
          return r3;
        }
        function r2(e5) {
          for (var r3 = 1; r3 < arguments.length; r3++) {
            var i3 = null != arguments[r3] ? arguments[r3] : {};
            r3 % 2 ? t2(Object(i3), true).forEach(function(t3) {
              s2(e5, t3, i3[t3]);
            }) : Object.getOwnPropertyDescriptors ? Object.defineProperties(e5, Object.getOwnPropertyDescriptors(i3)) : t2(Object(i3)).forEach(function(t3) {
              Object.defineProperty(e5, t3, Object.getOwnPropertyDescriptor(i3, t3));
            });
          }
          return e5;
        }
        function i2(e5) {
          return i2 = "function" == typeof Symbol && "symbol" == typeof Symbol.iterator ? function(e6) {
            return typeof e6;
          } : function(e6) {
            return e6 && "function" == typeof Symbol && e6.constructor === Symbol && e6 !== Symbol.prototype ? "symbol" : typeof e6;
          }, i2(e5);
        }
        function n2(e5, t3) {
          if (!(e5 instanceof t3)) throw new TypeError("Cannot call a class as a function");
        }
        function a2(e5, t3) {
          for (var r3 = 0; r3 < t3.length; r3++) {
            var i3 = t3[r3];
            i3.enumerable = i3.enumerable || false, i3.configurable = true, "value" in i3 && (i3.writable = true), Object.defineProperty(e5, i3.key, i3);
          }
        }
        function o2(e5, t3, r3) {
          return t3 && a2(e5.prototype, t3), r3 && a2(e5, r3), Object.defineProperty(e5, "prototype", { writable: false }), e5;
        }
        function s2(e5, t3, r3) {
          return t3 in e5 ? Object.defineProperty(e5, t3, { value: r3, enumerable: true, configurable: true, writable: true }) : e5[t3] = r3, e5;
        }
        function l(e5, t3) {
          if ("function" != typeof t3 && null !== t3) throw new TypeError("Super expression must either be null or a function");
          e5.prototype = Object.create(t3 && t3.prototype, { constructor: { value: e5, writable: true, configurable: true } }), Object.defineProperty(e5, "prototype", { writable: false }), t3 && c(e5, t3);
        }
        function u(e5) {
          return u = Object.setPrototypeOf ? Object.getPrototypeOf : function(e6) {
            return e6.__proto__ || Object.getPrototypeOf(e6);
          }, u(e5);
        }
        function c(e5, t3) {
          return c = Object.setPrototypeOf || function(e6, t4) {
            return e6.__proto__ = t4, e6;
          }, c(e5, t3);
        }
        function d(e5, t3) {
          if (t3 && ("object" == typeof t3 || "function" == typeof t3)) return t3;
          if (void 0 !== t3) throw new TypeError("Derived constructors may only return object or undefined");
          return function(e6) {
            if (void 0 === e6) throw new ReferenceError("this hasn't been initialised - super() hasn't been called");
            return e6;
          }(e5);
        }
        function p(e5) {
          var t3 = function() {
            if ("undefined" == typeof Reflect || !Reflect.construct) return false;
            if (Reflect.construct.sham) return false;
            if ("function" == typeof Proxy) return true;
            try {
              return Boolean.prototype.valueOf.call(Reflect.construct(Boolean, [], function() {
              })), true;
            } catch (e6) {
              return false;
            }
          }();
          return function() {
            var r3, i3 = u(e5);
            if (t3) {
              var n3 = u(this).constructor;
              r3 = Reflect.construct(i3, arguments, n3);
            } else r3 = i3.apply(this, arguments);
            return d(this, r3);
          };
        }
        function h(e5) {
          return function(e6) {
            if (Array.isArray(e6)) return v(e6);
          }(e5) || function(e6) {
            if ("undefined" != typeof Symbol && null != e6[Symbol.iterator] || null != e6["@@iterator"]) return Array.from(e6);
          }(e5) || function(e6, t3) {
            if (!e6) return;
            if ("string" == typeof e6) return v(e6, t3);
            var r3 = Object.prototype.toString.call(e6).slice(8, -1);
            "Object" === r3 && e6.constructor && (r3 = e6.constructor.name);
            if ("Map" === r3 || "Set" === r3) return Array.from(e6);
            if ("Arguments" === r3 || /^(?:Ui|I)nt(?:8|16|32)(?:Clamped)?Array$/.test(r3)) return v(e6, t3);
          }(e5) || function() {
            throw new TypeError("Invalid attempt to spread non-iterable instance.\nIn order to be iterable, non-array objects must have a [Symbol.iterator]() method.");
          }();
        }
        function v(e5, t3) {
          (null == t3 || t3 > e5.length) && (t3 = e5.length);
          for (var r3 = 0, i3 = new Array(t3); r3 < t3; r3++) i3[r3] = e5[r3];
          return i3;
        }
        function f() {
          var e5 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
          return { id: e5.id || null, adId: e5.adId || null, sequence: e5.sequence || null, apiFramework: e5.apiFramework || null, universalAdIds: [], creativeExtensions: [] };
        }
        var m = ["ADCATEGORIES", "ADCOUNT", "ADPLAYHEAD", "ADSERVINGID", "ADTYPE", "APIFRAMEWORKS", "APPBUNDLE", "ASSETURI", "BLOCKEDADCATEGORIES", "BREAKMAXADLENGTH", "BREAKMAXADS", "BREAKMAXDURATION", "BREAKMINADLENGTH", "BREAKMINDURATION", "BREAKPOSITION", "CLICKPOS", "CLICKTYPE", "CLIENTUA", "CONTENTID", "CONTENTPLAYHEAD", "CONTENTURI", "DEVICEIP", "DEVICEUA", "DOMAIN", "EXTENSIONS", "GDPRCONSENT", "IFA", "IFATYPE", "INVENTORYSTATE", "LATLONG", "LIMITADTRACKING", "MEDIAMIME", "MEDIAPLAYHEAD", "OMIDPARTNER", "PAGEURL", "PLACEMENTTYPE", "PLAYERCAPABILITIES", "PLAYERSIZE", "PLAYERSTATE", "PODSEQUENCE", "REGULATIONS", "SERVERSIDE", "SERVERUA", "TRANSACTIONID", "UNIVERSALADID", "VASTVERSIONS", "VERIFICATIONVENDORS"];
        function g(e5) {
          var t3 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {}, r3 = arguments.length > 2 && void 0 !== arguments[2] ? arguments[2] : {}, i3 = [], n3 = A(e5);
          for (var a3 in !t3.ERRORCODE || r3.isCustomCode || /^[0-9]{3}$/.test(t3.ERRORCODE) || (t3.ERRORCODE = 900), t3.CACHEBUSTING = E(Math.round(1e8 * Math.random())), t3.TIMESTAMP = (/* @__PURE__ */ new Date()).toISOString(), t3.RANDOM = t3.random = t3.CACHEBUSTING, t3) t3[a3] = b(t3[a3]);
          for (var o3 in n3) {
            var s3 = n3[o3];
            "string" == typeof s3 && i3.push(y(s3, t3));
          }
          return i3;
        }
        function y(e5, t3) {
          var r3 = (e5 = T(e5, t3)).match(/[^[\]]+(?=])/g);
          if (!r3) return e5;
          var i3 = r3.filter(function(e6) {
            return m.indexOf(e6) > -1;
          });
          return 0 === i3.length ? e5 : T(e5, i3 = i3.reduce(function(e6, t4) {
            return e6[t4] = -1, e6;
          }, {}));
        }
        function T(e5, t3) {
          var r3 = e5;
          for (var i3 in t3) {
            var n3 = t3[i3];
            r3 = r3.replace(new RegExp("(?:\\[|%%)(".concat(i3, ")(?:\\]|%%)"), "g"), n3);
          }
          return r3;
        }
        function A(e5) {
          return Array.isArray(e5) ? e5.map(function(e6) {
            return e6 && e6.hasOwnProperty("url") ? e6.url : e6;
          }) : e5;
        }
        function k(e5, t3) {
          for (var r3 = 0; r3 < t3.length; r3++) if (R(t3[r3], e5)) return true;
          return false;
        }
        function R(e5, t3) {
          if (e5 && t3) {
            var r3 = Object.getOwnPropertyNames(e5), i3 = Object.getOwnPropertyNames(t3);
            return r3.length === i3.length && (e5.id === t3.id && e5.url === t3.url);
          }
          return false;
        }
        function b(e5) {
          return encodeURIComponent(e5).replace(/[!'()*]/g, function(e6) {
            return "%".concat(e6.charCodeAt(0).toString(16));
          });
        }
        function E(e5) {
          var t3 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : 8;
          return e5.toString().padStart(t3, "0");
        }
        var N = { track: function(e5, t3, r3) {
          g(e5, t3, r3).forEach(function(e6) {
            "undefined" != typeof window && null !== window && (new Image().src = e6);
          });
        }, resolveURLTemplates: g, extractURLsFromTemplates: A, containsTemplateObject: k, isTemplateObjectEqual: R, encodeURIComponentRFC3986: b, replaceUrlMacros: y, isNumeric: function(e5) {
          return !isNaN(parseFloat(e5)) && isFinite(e5);
        }, flatten: function e5(t3) {
          return t3.reduce(function(t4, r3) {
            return t4.concat(Array.isArray(r3) ? e5(r3) : r3);
          }, []);
        }, joinArrayOfUniqueTemplateObjs: function() {
          var e5 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : [], t3 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : [], r3 = Array.isArray(e5) ? e5 : [], i3 = Array.isArray(t3) ? t3 : [], n3 = r3.concat(i3);
          return n3.reduce(function(e6, t4) {
            return k(t4, e6) || e6.push(t4), e6;
          }, []);
        }, isValidTimeValue: function(e5) {
          return Number.isFinite(e5) && e5 >= -2;
        }, addLeadingZeros: E };
        function L(e5) {
          return -1 !== ["true", "TRUE", "True", "1"].indexOf(e5);
        }
        var w = { childByName: function(e5, t3) {
          var r3 = e5.childNodes;
          for (var i3 in r3) {
            var n3 = r3[i3];
            if (n3.nodeName === t3) return n3;
          }
        }, childrenByName: function(e5, t3) {
          var r3 = [], i3 = e5.childNodes;
          for (var n3 in i3) {
            var a3 = i3[n3];
            a3.nodeName === t3 && r3.push(a3);
          }
          return r3;
        }, resolveVastAdTagURI: function(e5, t3) {
          if (!t3) return e5;
          if (0 === e5.indexOf("//")) {
            var r3 = location.protocol;
            return "".concat(r3).concat(e5);
          }
          if (-1 === e5.indexOf("://")) {
            var i3 = t3.slice(0, t3.lastIndexOf("/"));
            return "".concat(i3, "/").concat(e5);
          }
          return e5;
        }, parseBoolean: L, parseNodeText: function(e5) {
          return e5 && (e5.textContent || e5.text || "").trim();
        }, copyNodeAttribute: function(e5, t3, r3) {
          var i3 = t3.getAttribute(e5);
          i3 && r3.setAttribute(e5, i3);
        }, parseAttributes: function(e5) {
          for (var t3 = e5.attributes, r3 = {}, i3 = 0; i3 < t3.length; i3++) r3[t3[i3].nodeName] = t3[i3].nodeValue;
          return r3;
        }, parseDuration: function(e5) {
          if (null == e5) return -1;
          if (N.isNumeric(e5)) return parseInt(e5);
          var t3 = e5.split(":");
          if (3 !== t3.length) return -1;
          var r3 = t3[2].split("."), i3 = parseInt(r3[0]);
          2 === r3.length && (i3 += parseFloat("0.".concat(r3[1])));
          var n3 = parseInt(60 * t3[1]), a3 = parseInt(60 * t3[0] * 60);
          return isNaN(a3) || isNaN(n3) || isNaN(i3) || n3 > 3600 || i3 > 60 ? -1 : a3 + n3 + i3;
        }, splitVAST: function(e5) {
          var t3 = [], r3 = null;
          return e5.forEach(function(i3, n3) {
            if (i3.sequence && (i3.sequence = parseInt(i3.sequence, 10)), i3.sequence > 1) {
              var a3 = e5[n3 - 1];
              if (a3 && a3.sequence === i3.sequence - 1) return void (r3 && r3.push(i3));
              delete i3.sequence;
            }
            r3 = [i3], t3.push(r3);
          }), t3;
        }, assignAttributes: function(e5, t3) {
          if (e5) for (var r3 in e5) {
            var i3 = e5[r3];
            if (i3.nodeName && i3.nodeValue && t3.hasOwnProperty(i3.nodeName)) {
              var n3 = i3.nodeValue;
              "boolean" == typeof t3[i3.nodeName] && (n3 = L(n3)), t3[i3.nodeName] = n3;
            }
          }
        }, mergeWrapperAdData: function(e5, t3) {
          e5.errorURLTemplates = t3.errorURLTemplates.concat(e5.errorURLTemplates), e5.impressionURLTemplates = t3.impressionURLTemplates.concat(e5.impressionURLTemplates), e5.extensions = t3.extensions.concat(e5.extensions), t3.viewableImpression.length > 0 && (e5.viewableImpression = [].concat(h(e5.viewableImpression), h(t3.viewableImpression))), e5.followAdditionalWrappers = t3.followAdditionalWrappers, e5.allowMultipleAds = t3.allowMultipleAds, e5.fallbackOnNoAd = t3.fallbackOnNoAd;
          var r3 = (t3.creatives || []).filter(function(e6) {
            return e6 && "companion" === e6.type;
          }), i3 = r3.reduce(function(e6, t4) {
            return (t4.variations || []).forEach(function(t5) {
              (t5.companionClickTrackingURLTemplates || []).forEach(function(t6) {
                N.containsTemplateObject(t6, e6) || e6.push(t6);
              });
            }), e6;
          }, []);
          e5.creatives = r3.concat(e5.creatives);
          var n3 = t3.videoClickTrackingURLTemplates && t3.videoClickTrackingURLTemplates.length, a3 = t3.videoCustomClickURLTemplates && t3.videoCustomClickURLTemplates.length;
          e5.creatives.forEach(function(e6) {
            if (t3.trackingEvents && t3.trackingEvents[e6.type]) for (var r4 in t3.trackingEvents[e6.type]) {
              var o3 = t3.trackingEvents[e6.type][r4];
              Array.isArray(e6.trackingEvents[r4]) || (e6.trackingEvents[r4] = []), e6.trackingEvents[r4] = e6.trackingEvents[r4].concat(o3);
            }
            "linear" === e6.type && (n3 && (e6.videoClickTrackingURLTemplates = e6.videoClickTrackingURLTemplates.concat(t3.videoClickTrackingURLTemplates)), a3 && (e6.videoCustomClickURLTemplates = e6.videoCustomClickURLTemplates.concat(t3.videoCustomClickURLTemplates)), !t3.videoClickThroughURLTemplate || null !== e6.videoClickThroughURLTemplate && void 0 !== e6.videoClickThroughURLTemplate || (e6.videoClickThroughURLTemplate = t3.videoClickThroughURLTemplate)), "companion" === e6.type && i3.length && (e6.variations || []).forEach(function(e7) {
              e7.companionClickTrackingURLTemplates = N.joinArrayOfUniqueTemplateObjs(e7.companionClickTrackingURLTemplates, i3);
            });
          }), t3.adVerifications && (e5.adVerifications = e5.adVerifications.concat(t3.adVerifications)), t3.blockedAdCategories && (e5.blockedAdCategories = e5.blockedAdCategories.concat(t3.blockedAdCategories));
        } };
        function U(e5, t3) {
          var r3 = function() {
            var e6 = f(arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {}), t4 = e6.id, r4 = e6.adId, i3 = e6.sequence, n3 = e6.apiFramework;
            return { id: t4, adId: r4, sequence: i3, apiFramework: n3, type: "companion", required: null, variations: [] };
          }(t3);
          return r3.required = e5.getAttribute("required") || null, r3.variations = w.childrenByName(e5, "Companion").map(function(e6) {
            var t4 = function() {
              var e7 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
              return { id: e7.id || null, adType: "companionAd", width: e7.width || 0, height: e7.height || 0, assetWidth: e7.assetWidth || null, assetHeight: e7.assetHeight || null, expandedWidth: e7.expandedWidth || null, expandedHeight: e7.expandedHeight || null, apiFramework: e7.apiFramework || null, adSlotID: e7.adSlotID || null, pxratio: e7.pxratio || "1", renderingMode: e7.renderingMode || "default", staticResources: [], htmlResources: [], iframeResources: [], adParameters: null, xmlEncoded: null, altText: null, companionClickThroughURLTemplate: null, companionClickTrackingURLTemplates: [], trackingEvents: {} };
            }(w.parseAttributes(e6));
            t4.htmlResources = w.childrenByName(e6, "HTMLResource").reduce(function(e7, t5) {
              var r5 = w.parseNodeText(t5);
              return r5 ? e7.concat(r5) : e7;
            }, []), t4.iframeResources = w.childrenByName(e6, "IFrameResource").reduce(function(e7, t5) {
              var r5 = w.parseNodeText(t5);
              return r5 ? e7.concat(r5) : e7;
            }, []), t4.staticResources = w.childrenByName(e6, "StaticResource").reduce(function(e7, t5) {
              var r5 = w.parseNodeText(t5);
              return r5 ? e7.concat({ url: r5, creativeType: t5.getAttribute("creativeType") || null }) : e7;
            }, []), t4.altText = w.parseNodeText(w.childByName(e6, "AltText")) || null;
            var r4 = w.childByName(e6, "TrackingEvents");
            r4 && w.childrenByName(r4, "Tracking").forEach(function(e7) {
              var r5 = e7.getAttribute("event"), i4 = w.parseNodeText(e7);
              r5 && i4 && (Array.isArray(t4.trackingEvents[r5]) || (t4.trackingEvents[r5] = []), t4.trackingEvents[r5].push(i4));
            }), t4.companionClickTrackingURLTemplates = w.childrenByName(e6, "CompanionClickTracking").map(function(e7) {
              return { id: e7.getAttribute("id") || null, url: w.parseNodeText(e7) };
            }), t4.companionClickThroughURLTemplate = w.parseNodeText(w.childByName(e6, "CompanionClickThrough")) || null;
            var i3 = w.childByName(e6, "AdParameters");
            return i3 && (t4.adParameters = w.parseNodeText(i3), t4.xmlEncoded = i3.getAttribute("xmlEncoded") || null), t4;
          }), r3;
        }
        function C(e5) {
          return "linear" === e5.type;
        }
        function I(e5, t3) {
          var r3, i3 = function() {
            var e6 = f(arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {}), t4 = e6.id, r4 = e6.adId, i4 = e6.sequence, n4 = e6.apiFramework;
            return { id: t4, adId: r4, sequence: i4, apiFramework: n4, type: "linear", duration: 0, skipDelay: null, mediaFiles: [], mezzanine: null, interactiveCreativeFile: null, closedCaptionFiles: [], videoClickThroughURLTemplate: null, videoClickTrackingURLTemplates: [], videoCustomClickURLTemplates: [], adParameters: null, icons: [], trackingEvents: {} };
          }(t3);
          i3.duration = w.parseDuration(w.parseNodeText(w.childByName(e5, "Duration")));
          var n3 = e5.getAttribute("skipoffset");
          if (null == n3) i3.skipDelay = null;
          else if ("%" === n3.charAt(n3.length - 1) && -1 !== i3.duration) {
            var a3 = parseInt(n3, 10);
            i3.skipDelay = i3.duration * (a3 / 100);
          } else i3.skipDelay = w.parseDuration(n3);
          var o3 = w.childByName(e5, "VideoClicks");
          if (o3) {
            var s3 = w.childByName(o3, "ClickThrough");
            i3.videoClickThroughURLTemplate = s3 ? { id: s3.getAttribute("id") || null, url: w.parseNodeText(s3) } : null, w.childrenByName(o3, "ClickTracking").forEach(function(e6) {
              i3.videoClickTrackingURLTemplates.push({ id: e6.getAttribute("id") || null, url: w.parseNodeText(e6) });
            }), w.childrenByName(o3, "CustomClick").forEach(function(e6) {
              i3.videoCustomClickURLTemplates.push({ id: e6.getAttribute("id") || null, url: w.parseNodeText(e6) });
            });
          }
          var l2 = w.childByName(e5, "AdParameters");
          l2 && (i3.adParameters = w.parseNodeText(l2)), w.childrenByName(e5, "TrackingEvents").forEach(function(e6) {
            w.childrenByName(e6, "Tracking").forEach(function(e7) {
              var t4 = e7.getAttribute("event"), n4 = w.parseNodeText(e7);
              if (t4 && n4) {
                if ("progress" === t4) {
                  if (!(r3 = e7.getAttribute("offset"))) return;
                  t4 = "%" === r3.charAt(r3.length - 1) ? "progress-".concat(r3) : "progress-".concat(Math.round(w.parseDuration(r3)));
                }
                Array.isArray(i3.trackingEvents[t4]) || (i3.trackingEvents[t4] = []), i3.trackingEvents[t4].push(n4);
              }
            });
          }), w.childrenByName(e5, "MediaFiles").forEach(function(e6) {
            w.childrenByName(e6, "MediaFile").forEach(function(e7) {
              i3.mediaFiles.push(function(e8) {
                var t5 = { id: null, fileURL: null, fileSize: 0, deliveryType: "progressive", mimeType: null, mediaType: null, codec: null, bitrate: 0, minBitrate: 0, maxBitrate: 0, width: 0, height: 0, apiFramework: null, scalable: null, maintainAspectRatio: null };
                t5.id = e8.getAttribute("id"), t5.fileURL = w.parseNodeText(e8), t5.deliveryType = e8.getAttribute("delivery"), t5.codec = e8.getAttribute("codec"), t5.mimeType = e8.getAttribute("type"), t5.mediaType = e8.getAttribute("mediaType") || "2D", t5.apiFramework = e8.getAttribute("apiFramework"), t5.fileSize = parseInt(e8.getAttribute("fileSize") || 0), t5.bitrate = parseInt(e8.getAttribute("bitrate") || 0), t5.minBitrate = parseInt(e8.getAttribute("minBitrate") || 0), t5.maxBitrate = parseInt(e8.getAttribute("maxBitrate") || 0), t5.width = parseInt(e8.getAttribute("width") || 0), t5.height = parseInt(e8.getAttribute("height") || 0);
                var r5 = e8.getAttribute("scalable");
                r5 && "string" == typeof r5 && (t5.scalable = w.parseBoolean(r5));
                var i4 = e8.getAttribute("maintainAspectRatio");
                i4 && "string" == typeof i4 && (t5.maintainAspectRatio = w.parseBoolean(i4));
                return t5;
              }(e7));
            });
            var t4 = w.childByName(e6, "InteractiveCreativeFile");
            t4 && (i3.interactiveCreativeFile = function(e7) {
              var t5 = function() {
                var e8 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
                return { type: e8.type || null, apiFramework: e8.apiFramework || null, variableDuration: w.parseBoolean(e8.variableDuration), fileURL: null };
              }(w.parseAttributes(e7));
              return t5.fileURL = w.parseNodeText(e7), t5;
            }(t4));
            var r4 = w.childByName(e6, "ClosedCaptionFiles");
            r4 && w.childrenByName(r4, "ClosedCaptionFile").forEach(function(e7) {
              var t5 = function() {
                var e8 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
                return { type: e8.type || null, language: e8.language || null, fileURL: null };
              }(w.parseAttributes(e7));
              t5.fileURL = w.parseNodeText(e7), i3.closedCaptionFiles.push(t5);
            });
            var n4, a4, o4, s4 = w.childByName(e6, "Mezzanine"), l3 = (n4 = s4, a4 = {}, o4 = false, ["delivery", "type", "width", "height"].forEach(function(e7) {
              n4 && n4.getAttribute(e7) ? a4[e7] = n4.getAttribute(e7) : o4 = true;
            }), o4 ? null : a4);
            if (l3) {
              var u3 = { id: null, fileURL: null, delivery: null, codec: null, type: null, width: 0, height: 0, fileSize: 0, mediaType: "2D" };
              u3.id = s4.getAttribute("id"), u3.fileURL = w.parseNodeText(s4), u3.delivery = l3.delivery, u3.codec = s4.getAttribute("codec"), u3.type = l3.type, u3.width = parseInt(l3.width, 10), u3.height = parseInt(l3.height, 10), u3.fileSize = parseInt(s4.getAttribute("fileSize"), 10), u3.mediaType = s4.getAttribute("mediaType") || "2D", i3.mezzanine = u3;
            }
          });
          var u2 = w.childByName(e5, "Icons");
          return u2 && w.childrenByName(u2, "Icon").forEach(function(e6) {
            i3.icons.push(function(e7) {
              var t4 = { program: null, height: 0, width: 0, xPosition: 0, yPosition: 0, apiFramework: null, offset: null, duration: 0, type: null, staticResource: null, htmlResource: null, iframeResource: null, pxratio: "1", iconClickThroughURLTemplate: null, iconClickTrackingURLTemplates: [], iconViewTrackingURLTemplate: null };
              t4.program = e7.getAttribute("program"), t4.height = parseInt(e7.getAttribute("height") || 0), t4.width = parseInt(e7.getAttribute("width") || 0), t4.xPosition = function(e8) {
                if (-1 !== ["left", "right"].indexOf(e8)) return e8;
                return parseInt(e8 || 0);
              }(e7.getAttribute("xPosition")), t4.yPosition = function(e8) {
                if (-1 !== ["top", "bottom"].indexOf(e8)) return e8;
                return parseInt(e8 || 0);
              }(e7.getAttribute("yPosition")), t4.apiFramework = e7.getAttribute("apiFramework"), t4.pxratio = e7.getAttribute("pxratio") || "1", t4.offset = w.parseDuration(e7.getAttribute("offset")), t4.duration = w.parseDuration(e7.getAttribute("duration")), w.childrenByName(e7, "HTMLResource").forEach(function(e8) {
                t4.type = e8.getAttribute("creativeType") || "text/html", t4.htmlResource = w.parseNodeText(e8);
              }), w.childrenByName(e7, "IFrameResource").forEach(function(e8) {
                t4.type = e8.getAttribute("creativeType") || 0, t4.iframeResource = w.parseNodeText(e8);
              }), w.childrenByName(e7, "StaticResource").forEach(function(e8) {
                t4.type = e8.getAttribute("creativeType") || 0, t4.staticResource = w.parseNodeText(e8);
              });
              var r4 = w.childByName(e7, "IconClicks");
              r4 && (t4.iconClickThroughURLTemplate = w.parseNodeText(w.childByName(r4, "IconClickThrough")), w.childrenByName(r4, "IconClickTracking").forEach(function(e8) {
                t4.iconClickTrackingURLTemplates.push({ id: e8.getAttribute("id") || null, url: w.parseNodeText(e8) });
              }));
              return t4.iconViewTrackingURLTemplate = w.parseNodeText(w.childByName(e7, "IconViewTracking")), t4;
            }(e6));
          }), i3;
        }
        function x(e5, t3) {
          var r3 = function() {
            var e6 = f(arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {}), t4 = e6.id, r4 = e6.adId, i3 = e6.sequence, n3 = e6.apiFramework;
            return { id: t4, adId: r4, sequence: i3, apiFramework: n3, type: "nonlinear", variations: [], trackingEvents: {} };
          }(t3);
          return w.childrenByName(e5, "TrackingEvents").forEach(function(e6) {
            var t4, i3;
            w.childrenByName(e6, "Tracking").forEach(function(e7) {
              t4 = e7.getAttribute("event"), i3 = w.parseNodeText(e7), t4 && i3 && (Array.isArray(r3.trackingEvents[t4]) || (r3.trackingEvents[t4] = []), r3.trackingEvents[t4].push(i3));
            });
          }), w.childrenByName(e5, "NonLinear").forEach(function(e6) {
            var t4 = { id: null, width: 0, height: 0, expandedWidth: 0, expandedHeight: 0, scalable: true, maintainAspectRatio: true, minSuggestedDuration: 0, apiFramework: "static", adType: "nonLinearAd", type: null, staticResource: null, htmlResource: null, iframeResource: null, nonlinearClickThroughURLTemplate: null, nonlinearClickTrackingURLTemplates: [], adParameters: null };
            t4.id = e6.getAttribute("id") || null, t4.width = e6.getAttribute("width"), t4.height = e6.getAttribute("height"), t4.expandedWidth = e6.getAttribute("expandedWidth"), t4.expandedHeight = e6.getAttribute("expandedHeight"), t4.scalable = w.parseBoolean(e6.getAttribute("scalable")), t4.maintainAspectRatio = w.parseBoolean(e6.getAttribute("maintainAspectRatio")), t4.minSuggestedDuration = w.parseDuration(e6.getAttribute("minSuggestedDuration")), t4.apiFramework = e6.getAttribute("apiFramework"), w.childrenByName(e6, "HTMLResource").forEach(function(e7) {
              t4.type = e7.getAttribute("creativeType") || "text/html", t4.htmlResource = w.parseNodeText(e7);
            }), w.childrenByName(e6, "IFrameResource").forEach(function(e7) {
              t4.type = e7.getAttribute("creativeType") || 0, t4.iframeResource = w.parseNodeText(e7);
            }), w.childrenByName(e6, "StaticResource").forEach(function(e7) {
              t4.type = e7.getAttribute("creativeType") || 0, t4.staticResource = w.parseNodeText(e7);
            });
            var i3 = w.childByName(e6, "AdParameters");
            i3 && (t4.adParameters = w.parseNodeText(i3)), t4.nonlinearClickThroughURLTemplate = w.parseNodeText(w.childByName(e6, "NonLinearClickThrough")), w.childrenByName(e6, "NonLinearClickTracking").forEach(function(e7) {
              t4.nonlinearClickTrackingURLTemplates.push({ id: e7.getAttribute("id") || null, url: w.parseNodeText(e7) });
            }), r3.variations.push(t4);
          }), r3;
        }
        function S(e5) {
          var t3 = [];
          return e5.forEach(function(e6) {
            var r3 = O(e6);
            r3 && t3.push(r3);
          }), t3;
        }
        function O(e5) {
          if ("#comment" === e5.nodeName) return null;
          var t3, r3 = { name: null, value: null, attributes: {}, children: [] }, i3 = e5.attributes, n3 = e5.childNodes;
          if (r3.name = e5.nodeName, e5.attributes) {
            for (var a3 in i3) if (i3.hasOwnProperty(a3)) {
              var o3 = i3[a3];
              o3.nodeName && o3.nodeValue && (r3.attributes[o3.nodeName] = o3.nodeValue);
            }
          }
          for (var s3 in n3) if (n3.hasOwnProperty(s3)) {
            var l2 = O(n3[s3]);
            l2 && r3.children.push(l2);
          }
          if (0 === r3.children.length || 1 === r3.children.length && ["#cdata-section", "#text"].indexOf(r3.children[0].name) >= 0) {
            var u2 = w.parseNodeText(e5);
            "" !== u2 && (r3.value = u2), r3.children = [];
          }
          return null === (t3 = r3).value && 0 === Object.keys(t3.attributes).length && 0 === t3.children.length ? null : r3;
        }
        function D(e5) {
          var t3 = [];
          return e5.forEach(function(e6) {
            var r3, i3 = { id: e6.getAttribute("id") || null, adId: V(e6), sequence: e6.getAttribute("sequence") || null, apiFramework: e6.getAttribute("apiFramework") || null }, n3 = [];
            w.childrenByName(e6, "UniversalAdId").forEach(function(e7) {
              var t4 = { idRegistry: e7.getAttribute("idRegistry") || "unknown", value: w.parseNodeText(e7) };
              n3.push(t4);
            });
            var a3 = w.childByName(e6, "CreativeExtensions");
            for (var o3 in a3 && (r3 = S(w.childrenByName(a3, "CreativeExtension"))), e6.childNodes) {
              var s3 = e6.childNodes[o3], l2 = void 0;
              switch (s3.nodeName) {
                case "Linear":
                  l2 = I(s3, i3);
                  break;
                case "NonLinearAds":
                  l2 = x(s3, i3);
                  break;
                case "CompanionAds":
                  l2 = U(s3, i3);
              }
              l2 && (n3 && (l2.universalAdIds = n3), r3 && (l2.creativeExtensions = r3), t3.push(l2));
            }
          }), t3;
        }
        function V(e5) {
          return e5.getAttribute("AdID") || e5.getAttribute("adID") || e5.getAttribute("adId") || null;
        }
        var P = { Wrapper: { subElements: ["VASTAdTagURI", "Impression"] }, BlockedAdCategories: { attributes: ["authority"] }, InLine: { subElements: ["AdSystem", "AdTitle", "Impression", "AdServingId", "Creatives"] }, Category: { attributes: ["authority"] }, Pricing: { attributes: ["model", "currency"] }, Verification: { oneOfinLineResources: ["JavaScriptResource", "ExecutableResource"], attributes: ["vendor"] }, UniversalAdId: { attributes: ["idRegistry"] }, JavaScriptResource: { attributes: ["apiFramework", "browserOptional"] }, ExecutableResource: { attributes: ["apiFramework", "type"] }, Tracking: { attributes: ["event"] }, Creatives: { subElements: ["Creative"] }, Creative: { subElements: ["UniversalAdId"] }, Linear: { subElements: ["MediaFiles", "Duration"] }, MediaFiles: { subElements: ["MediaFile"] }, MediaFile: { attributes: ["delivery", "type", "width", "height"] }, Mezzanine: { attributes: ["delivery", "type", "width", "height"] }, NonLinear: { oneOfinLineResources: ["StaticResource", "IFrameResource", "HTMLResource"], attributes: ["width", "height"] }, Companion: { oneOfinLineResources: ["StaticResource", "IFrameResource", "HTMLResource"], attributes: ["width", "height"] }, StaticResource: { attributes: ["creativeType"] }, Icons: { subElements: ["Icon"] }, Icon: { oneOfinLineResources: ["StaticResource", "IFrameResource", "HTMLResource"] } };
        function B(e5, t3) {
          if (P[e5.nodeName] && P[e5.nodeName].attributes) {
            var r3 = P[e5.nodeName].attributes.filter(function(t4) {
              return !e5.getAttribute(t4);
            });
            r3.length > 0 && j({ name: e5.nodeName, parentName: e5.parentNode.nodeName, attributes: r3 }, t3);
          }
        }
        function F(e5, t3, r3) {
          var i3 = P[e5.nodeName], n3 = !r3 && "Wrapper" !== e5.nodeName;
          if (i3 && !n3) {
            if (i3.subElements) {
              var a3 = i3.subElements.filter(function(t4) {
                return !w.childByName(e5, t4);
              });
              a3.length > 0 && j({ name: e5.nodeName, parentName: e5.parentNode.nodeName, subElements: a3 }, t3);
            }
            if (r3 && i3.oneOfinLineResources) i3.oneOfinLineResources.some(function(t4) {
              return w.childByName(e5, t4);
            }) || j({ name: e5.nodeName, parentName: e5.parentNode.nodeName, oneOfResources: i3.oneOfinLineResources }, t3);
          }
        }
        function M(e5) {
          return e5.children && 0 !== e5.children.length;
        }
        function j(e5, t3) {
          var r3 = e5.name, i3 = e5.parentName, n3 = e5.attributes, a3 = e5.subElements, o3 = e5.oneOfResources, s3 = "Element '".concat(r3, "'");
          t3("VAST-warning", { message: s3 += n3 ? " missing required attribute(s) '".concat(n3.join(", "), "' ") : a3 ? " missing required sub element(s) '".concat(a3.join(", "), "' ") : o3 ? " must provide one of the following '".concat(o3.join(", "), "' ") : " is empty", parentElement: i3, specVersion: 4.1 });
        }
        var W = { verifyRequiredValues: function e5(t3, r3, i3) {
          if (t3 && t3.nodeName) if ("InLine" === t3.nodeName && (i3 = true), B(t3, r3), M(t3)) {
            F(t3, r3, i3);
            for (var n3 = 0; n3 < t3.children.length; n3++) e5(t3.children[n3], r3, i3);
          } else 0 === w.parseNodeText(t3).length && j({ name: t3.nodeName, parentName: t3.parentNode.nodeName }, r3);
        }, hasSubElements: M, emitMissingValueWarning: j, verifyRequiredAttributes: B, verifyRequiredSubElements: F };
        function q(e5, t3) {
          var r3 = arguments.length > 2 && void 0 !== arguments[2] ? arguments[2] : {}, i3 = r3.allowMultipleAds, n3 = r3.followAdditionalWrappers, a3 = e5.childNodes;
          for (var o3 in a3) {
            var s3 = a3[o3];
            if (-1 !== ["Wrapper", "InLine"].indexOf(s3.nodeName) && ("Wrapper" !== s3.nodeName || false !== n3)) {
              if (w.copyNodeAttribute("id", e5, s3), w.copyNodeAttribute("sequence", e5, s3), w.copyNodeAttribute("adType", e5, s3), "Wrapper" === s3.nodeName) return { ad: G(s3, t3), type: "WRAPPER" };
              if ("InLine" === s3.nodeName) return { ad: H(s3, t3, { allowMultipleAds: i3 }), type: "INLINE" };
            }
          }
        }
        function H(e5, t3) {
          var r3 = arguments.length > 2 && void 0 !== arguments[2] ? arguments[2] : {}, i3 = r3.allowMultipleAds;
          return false === i3 && e5.getAttribute("sequence") ? null : _(e5, t3);
        }
        function _(e5, t3) {
          var r3 = [];
          t3 && W.verifyRequiredValues(e5, t3);
          var i3 = e5.childNodes, n3 = function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            return { id: e6.id || null, sequence: e6.sequence || null, adType: e6.adType || null, adServingId: null, categories: [], expires: null, viewableImpression: [], system: null, title: null, description: null, advertiser: null, pricing: null, survey: null, errorURLTemplates: [], impressionURLTemplates: [], creatives: [], extensions: [], adVerifications: [], blockedAdCategories: [], followAdditionalWrappers: true, allowMultipleAds: false, fallbackOnNoAd: null };
          }(w.parseAttributes(e5));
          for (var a3 in i3) {
            var o3 = i3[a3];
            switch (o3.nodeName) {
              case "Error":
                n3.errorURLTemplates.push(w.parseNodeText(o3));
                break;
              case "Impression":
                n3.impressionURLTemplates.push({ id: o3.getAttribute("id") || null, url: w.parseNodeText(o3) });
                break;
              case "Creatives":
                n3.creatives = D(w.childrenByName(o3, "Creative"));
                break;
              case "Extensions":
                var s3 = w.childrenByName(o3, "Extension");
                n3.extensions = S(s3), n3.adVerifications.length || (r3 = Y(s3));
                break;
              case "AdVerifications":
                n3.adVerifications = z(w.childrenByName(o3, "Verification"));
                break;
              case "AdSystem":
                n3.system = { value: w.parseNodeText(o3), version: o3.getAttribute("version") || null };
                break;
              case "AdTitle":
                n3.title = w.parseNodeText(o3);
                break;
              case "AdServingId":
                n3.adServingId = w.parseNodeText(o3);
                break;
              case "Category":
                n3.categories.push({ authority: o3.getAttribute("authority") || null, value: w.parseNodeText(o3) });
                break;
              case "Expires":
                n3.expires = parseInt(w.parseNodeText(o3), 10);
                break;
              case "ViewableImpression":
                n3.viewableImpression.push(X(o3));
                break;
              case "Description":
                n3.description = w.parseNodeText(o3);
                break;
              case "Advertiser":
                n3.advertiser = { id: o3.getAttribute("id") || null, value: w.parseNodeText(o3) };
                break;
              case "Pricing":
                n3.pricing = { value: w.parseNodeText(o3), model: o3.getAttribute("model") || null, currency: o3.getAttribute("currency") || null };
                break;
              case "Survey":
                n3.survey = w.parseNodeText(o3);
                break;
              case "BlockedAdCategories":
                n3.blockedAdCategories.push({ authority: o3.getAttribute("authority") || null, value: w.parseNodeText(o3) });
            }
          }
          return r3.length && (n3.adVerifications = n3.adVerifications.concat(r3)), n3;
        }
        function G(e5, t3) {
          var r3 = _(e5, t3), i3 = e5.getAttribute("followAdditionalWrappers"), n3 = e5.getAttribute("allowMultipleAds"), a3 = e5.getAttribute("fallbackOnNoAd");
          r3.followAdditionalWrappers = !i3 || w.parseBoolean(i3), r3.allowMultipleAds = !!n3 && w.parseBoolean(n3), r3.fallbackOnNoAd = a3 ? w.parseBoolean(a3) : null;
          var o3 = w.childByName(e5, "VASTAdTagURI");
          if (o3 ? r3.nextWrapperURL = w.parseNodeText(o3) : (o3 = w.childByName(e5, "VASTAdTagURL")) && (r3.nextWrapperURL = w.parseNodeText(w.childByName(o3, "URL"))), r3.creatives.forEach(function(e6) {
            if (-1 !== ["linear", "nonlinear"].indexOf(e6.type)) {
              if (e6.trackingEvents) {
                r3.trackingEvents || (r3.trackingEvents = {}), r3.trackingEvents[e6.type] || (r3.trackingEvents[e6.type] = {});
                var t4 = function(t5) {
                  var i5 = e6.trackingEvents[t5];
                  Array.isArray(r3.trackingEvents[e6.type][t5]) || (r3.trackingEvents[e6.type][t5] = []), i5.forEach(function(i6) {
                    r3.trackingEvents[e6.type][t5].push(i6);
                  });
                };
                for (var i4 in e6.trackingEvents) t4(i4);
              }
              e6.videoClickTrackingURLTemplates && (Array.isArray(r3.videoClickTrackingURLTemplates) || (r3.videoClickTrackingURLTemplates = []), e6.videoClickTrackingURLTemplates.forEach(function(e7) {
                r3.videoClickTrackingURLTemplates.push(e7);
              })), e6.videoClickThroughURLTemplate && (r3.videoClickThroughURLTemplate = e6.videoClickThroughURLTemplate), e6.videoCustomClickURLTemplates && (Array.isArray(r3.videoCustomClickURLTemplates) || (r3.videoCustomClickURLTemplates = []), e6.videoCustomClickURLTemplates.forEach(function(e7) {
                r3.videoCustomClickURLTemplates.push(e7);
              }));
            }
          }), r3.nextWrapperURL) return r3;
        }
        function z(e5) {
          var t3 = [];
          return e5.forEach(function(e6) {
            var r3 = { resource: null, vendor: null, browserOptional: false, apiFramework: null, type: null, parameters: null, trackingEvents: {} }, i3 = e6.childNodes;
            for (var n3 in w.assignAttributes(e6.attributes, r3), i3) {
              var a3 = i3[n3];
              switch (a3.nodeName) {
                case "JavaScriptResource":
                case "ExecutableResource":
                  r3.resource = w.parseNodeText(a3), w.assignAttributes(a3.attributes, r3);
                  break;
                case "VerificationParameters":
                  r3.parameters = w.parseNodeText(a3);
              }
            }
            var o3 = w.childByName(e6, "TrackingEvents");
            o3 && w.childrenByName(o3, "Tracking").forEach(function(e7) {
              var t4 = e7.getAttribute("event"), i4 = w.parseNodeText(e7);
              t4 && i4 && (Array.isArray(r3.trackingEvents[t4]) || (r3.trackingEvents[t4] = []), r3.trackingEvents[t4].push(i4));
            }), t3.push(r3);
          }), t3;
        }
        function Y(e5) {
          var t3 = null, r3 = [];
          return e5.some(function(e6) {
            return t3 = w.childByName(e6, "AdVerifications");
          }), t3 && (r3 = z(w.childrenByName(t3, "Verification"))), r3;
        }
        function X(e5) {
          var t3 = {};
          t3.id = e5.getAttribute("id") || null;
          var r3 = e5.childNodes;
          for (var i3 in r3) {
            var n3 = r3[i3], a3 = n3.nodeName, o3 = w.parseNodeText(n3);
            if (("Viewable" === a3 || "NotViewable" === a3 || "ViewUndetermined" === a3) && o3) {
              var s3 = a3.toLowerCase();
              Array.isArray(t3[s3]) || (t3[s3] = []), t3[s3].push(o3);
            }
          }
          return t3;
        }
        var K = function() {
          function e5() {
            n2(this, e5), this._handlers = [];
          }
          return o2(e5, [{ key: "on", value: function(e6, t3) {
            if ("function" != typeof t3) throw new TypeError("The handler argument must be of type Function. Received type ".concat(i2(t3)));
            if (!e6) throw new TypeError("The event argument must be of type String. Received type ".concat(i2(e6)));
            return this._handlers.push({ event: e6, handler: t3 }), this;
          } }, { key: "once", value: function(e6, t3) {
            return this.on(e6, function(e7, t4, r3) {
              var i3 = { fired: false, wrapFn: void 0 };
              function n3() {
                i3.fired || (e7.off(t4, i3.wrapFn), i3.fired = true, r3.bind(e7).apply(void 0, arguments));
              }
              return i3.wrapFn = n3, n3;
            }(this, e6, t3));
          } }, { key: "off", value: function(e6, t3) {
            return this._handlers = this._handlers.filter(function(r3) {
              return r3.event !== e6 || r3.handler !== t3;
            }), this;
          } }, { key: "emit", value: function(e6) {
            for (var t3 = arguments.length, r3 = new Array(t3 > 1 ? t3 - 1 : 0), i3 = 1; i3 < t3; i3++) r3[i3 - 1] = arguments[i3];
            var n3 = false;
            return this._handlers.forEach(function(t4) {
              "*" === t4.event && (n3 = true, t4.handler.apply(t4, [e6].concat(r3))), t4.event === e6 && (n3 = true, t4.handler.apply(t4, r3));
            }), n3;
          } }, { key: "removeAllListeners", value: function(e6) {
            return e6 ? (this._handlers = this._handlers.filter(function(t3) {
              return t3.event !== e6;
            }), this) : (this._handlers = [], this);
          } }, { key: "listenerCount", value: function(e6) {
            return this._handlers.filter(function(t3) {
              return t3.event === e6;
            }).length;
          } }, { key: "listeners", value: function(e6) {
            return this._handlers.reduce(function(t3, r3) {
              return r3.event === e6 && t3.push(r3.handler), t3;
            }, []);
          } }, { key: "eventNames", value: function() {
            return this._handlers.map(function(e6) {
              return e6.event;
            });
          } }]), e5;
        }();
        var Q = { get: function(e5, t3, r3) {
          r3(new Error("Please bundle the library for node to use the node urlHandler"));
        } }, Z = 12e4;
        function J() {
          try {
            var e5 = new window.XMLHttpRequest();
            return "withCredentials" in e5 ? e5 : null;
          } catch (e6) {
            return null;
          }
        }
        function $(e5, t3, r3) {
          var i3 = r3 ? 408 : e5.status, n3 = r3 ? "XHRURLHandler: Request timed out after ".concat(e5.timeout, " ms (").concat(i3, ")") : "XHRURLHandler: ".concat(e5.statusText, " (").concat(i3, ")");
          t3(new Error(n3), null, { statusCode: i3 });
        }
        var ee = { get: function(e5, t3, r3) {
          if ("https:" === window.location.protocol && 0 === e5.indexOf("http://")) return r3(new Error("XHRURLHandler: Cannot go from HTTPS to HTTP."));
          try {
            var i3 = J();
            i3.open("GET", e5), i3.timeout = t3.timeout || Z, i3.withCredentials = t3.withCredentials || false, i3.overrideMimeType && i3.overrideMimeType("text/xml"), i3.onload = function() {
              return function(e6, t4) {
                200 === e6.status ? t4(null, e6.responseXML, { byteLength: e6.response.length, statusCode: e6.status }) : $(e6, t4, false);
              }(i3, r3);
            }, i3.onerror = function() {
              return $(i3, r3, false);
            }, i3.onabort = function() {
              return $(i3, r3, false);
            }, i3.ontimeout = function() {
              return $(i3, r3, true);
            }, i3.send();
          } catch (e6) {
            r3(new Error("XHRURLHandler: Unexpected error"));
          }
        }, supported: function() {
          return !!J();
        } };
        var te = { get: function(e5, t3, r3) {
          return r3 || ("function" == typeof t3 && (r3 = t3), t3 = {}), "undefined" == typeof window || null === window ? Q.get(e5, t3, r3) : ee.supported() ? ee.get(e5, t3, r3) : r3(new Error("Current context is not supported by any of the default URLHandlers. Please provide a custom URLHandler"));
        } };
        var re = 0, ie = 0, ne = function(e5, t3) {
          !e5 || !t3 || e5 <= 0 || t3 <= 0 || (ie = (ie * re + 8 * e5 / t3) / ++re);
        }, ae = { ERRORCODE: 900, extensions: [] }, oe = function(e5) {
          l(r3, e5);
          var t3 = p(r3);
          function r3() {
            var e6;
            return n2(this, r3), (e6 = t3.call(this)).remainingAds = [], e6.parentURLs = [], e6.errorURLTemplates = [], e6.rootErrorURLTemplates = [], e6.maxWrapperDepth = null, e6.URLTemplateFilters = [], e6.fetchingOptions = {}, e6.parsingOptions = {}, e6;
          }
          return o2(r3, [{ key: "addURLTemplateFilter", value: function(e6) {
            "function" == typeof e6 && this.URLTemplateFilters.push(e6);
          } }, { key: "removeURLTemplateFilter", value: function() {
            this.URLTemplateFilters.pop();
          } }, { key: "countURLTemplateFilters", value: function() {
            return this.URLTemplateFilters.length;
          } }, { key: "clearURLTemplateFilters", value: function() {
            this.URLTemplateFilters = [];
          } }, { key: "trackVastError", value: function(e6, t4) {
            for (var r4 = arguments.length, i3 = new Array(r4 > 2 ? r4 - 2 : 0), n3 = 2; n3 < r4; n3++) i3[n3 - 2] = arguments[n3];
            this.emit("VAST-error", Object.assign.apply(Object, [{}, ae, t4].concat(i3))), N.track(e6, t4);
          } }, { key: "getErrorURLTemplates", value: function() {
            return this.rootErrorURLTemplates.concat(this.errorURLTemplates);
          } }, { key: "getEstimatedBitrate", value: function() {
            return ie;
          } }, { key: "fetchVAST", value: function(e6) {
            var t4 = this, r4 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : 0, i3 = arguments.length > 2 && void 0 !== arguments[2] ? arguments[2] : null, n3 = arguments.length > 3 && void 0 !== arguments[3] ? arguments[3] : null;
            return new Promise(function(a3, o3) {
              t4.URLTemplateFilters.forEach(function(t5) {
                e6 = t5(e6);
              }), t4.parentURLs.push(e6);
              var s3 = Date.now();
              t4.emit("VAST-resolving", { url: e6, previousUrl: i3, wrapperDepth: r4, maxWrapperDepth: t4.maxWrapperDepth, timeout: t4.fetchingOptions.timeout, wrapperAd: n3 }), t4.urlHandler.get(e6, t4.fetchingOptions, function(n4, l2) {
                var u2 = arguments.length > 2 && void 0 !== arguments[2] ? arguments[2] : {}, c2 = Math.round(Date.now() - s3), d2 = Object.assign({ url: e6, previousUrl: i3, wrapperDepth: r4, error: n4, duration: c2 }, u2);
                t4.emit("VAST-resolved", d2), ne(u2.byteLength, c2), n4 ? o3(n4) : a3(l2);
              });
            });
          } }, { key: "initParsingStatus", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            this.errorURLTemplates = [], this.fetchingOptions = { timeout: e6.timeout || Z, withCredentials: e6.withCredentials }, this.maxWrapperDepth = e6.wrapperLimit || 10, this.parentURLs = [], this.parsingOptions = { allowMultipleAds: e6.allowMultipleAds }, this.remainingAds = [], this.rootErrorURLTemplates = [], this.rootURL = "", this.urlHandler = e6.urlHandler || e6.urlhandler || te, this.vastVersion = null, ne(e6.byteLength, e6.requestDuration);
          } }, { key: "getRemainingAds", value: function(e6) {
            var t4 = this;
            if (0 === this.remainingAds.length) return Promise.reject(new Error("No more ads are available for the given VAST"));
            var r4 = e6 ? N.flatten(this.remainingAds) : this.remainingAds.shift();
            return this.errorURLTemplates = [], this.parentURLs = [], this.resolveAds(r4, { wrapperDepth: 0, url: this.rootURL }).then(function(e7) {
              return t4.buildVASTResponse(e7);
            });
          } }, { key: "getAndParseVAST", value: function(e6) {
            var t4 = this, r4 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {};
            return this.initParsingStatus(r4), this.URLTemplateFilters.forEach(function(t5) {
              e6 = t5(e6);
            }), this.rootURL = e6, this.fetchVAST(e6).then(function(i3) {
              return r4.previousUrl = e6, r4.isRootVAST = true, r4.url = e6, t4.parse(i3, r4).then(function(e7) {
                return t4.buildVASTResponse(e7);
              });
            });
          } }, { key: "parseVAST", value: function(e6) {
            var t4 = this, r4 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {};
            return this.initParsingStatus(r4), r4.isRootVAST = true, this.parse(e6, r4).then(function(e7) {
              return t4.buildVASTResponse(e7);
            });
          } }, { key: "buildVASTResponse", value: function(e6) {
            var t4, r4 = { ads: (t4 = { ads: e6, errorURLTemplates: this.getErrorURLTemplates(), version: this.vastVersion }).ads || [], errorURLTemplates: t4.errorURLTemplates || [], version: t4.version || null };
            return this.completeWrapperResolving(r4), r4;
          } }, { key: "parseVastXml", value: function(e6, t4) {
            var r4 = t4.isRootVAST, i3 = void 0 !== r4 && r4, n3 = t4.url, a3 = void 0 === n3 ? null : n3, o3 = t4.wrapperDepth, s3 = void 0 === o3 ? 0 : o3, l2 = t4.allowMultipleAds, u2 = t4.followAdditionalWrappers;
            if (!e6 || !e6.documentElement || "VAST" !== e6.documentElement.nodeName) throw this.emit("VAST-ad-parsed", { type: "ERROR", url: a3, wrapperDepth: s3 }), new Error("Invalid VAST XMLDocument");
            var c2 = [], d2 = e6.documentElement.childNodes, p2 = e6.documentElement.getAttribute("version");
            for (var h2 in i3 && p2 && (this.vastVersion = p2), d2) {
              var v2 = d2[h2];
              if ("Error" === v2.nodeName) {
                var f2 = w.parseNodeText(v2);
                i3 ? this.rootErrorURLTemplates.push(f2) : this.errorURLTemplates.push(f2);
              } else if ("Ad" === v2.nodeName) {
                if (this.vastVersion && parseFloat(this.vastVersion) < 3) l2 = true;
                else if (false === l2 && c2.length > 1) break;
                var m2 = q(v2, this.emit.bind(this), { allowMultipleAds: l2, followAdditionalWrappers: u2 });
                m2.ad ? (c2.push(m2.ad), this.emit("VAST-ad-parsed", { type: m2.type, url: a3, wrapperDepth: s3, adIndex: c2.length - 1, vastVersion: p2 })) : this.trackVastError(this.getErrorURLTemplates(), { ERRORCODE: 101 });
              }
            }
            return c2;
          } }, { key: "parse", value: function(e6) {
            var t4 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {}, r4 = t4.url, i3 = void 0 === r4 ? null : r4, n3 = t4.resolveAll, a3 = void 0 === n3 || n3, o3 = t4.wrapperSequence, s3 = void 0 === o3 ? null : o3, l2 = t4.previousUrl, u2 = void 0 === l2 ? null : l2, c2 = t4.wrapperDepth, d2 = void 0 === c2 ? 0 : c2, p2 = t4.isRootVAST, h2 = void 0 !== p2 && p2, v2 = t4.followAdditionalWrappers, f2 = t4.allowMultipleAds, m2 = [];
            this.vastVersion && parseFloat(this.vastVersion) < 3 && h2 && (f2 = true);
            try {
              m2 = this.parseVastXml(e6, { isRootVAST: h2, url: i3, wrapperDepth: d2, allowMultipleAds: f2, followAdditionalWrappers: v2 });
            } catch (e7) {
              return Promise.reject(e7);
            }
            return 1 === m2.length && null != s3 && (m2[0].sequence = s3), false === a3 && (this.remainingAds = w.splitVAST(m2), m2 = this.remainingAds.shift()), this.resolveAds(m2, { wrapperDepth: d2, previousUrl: u2, url: i3 });
          } }, { key: "resolveAds", value: function() {
            var e6 = this, t4 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : [], r4 = arguments.length > 1 ? arguments[1] : void 0, i3 = r4.wrapperDepth, n3 = r4.previousUrl, a3 = r4.url, o3 = [];
            return n3 = a3, t4.forEach(function(t5) {
              var r5 = e6.resolveWrappers(t5, i3, n3);
              o3.push(r5);
            }), Promise.all(o3).then(function(t5) {
              var r5 = N.flatten(t5);
              if (!r5 && e6.remainingAds.length > 0) {
                var o4 = e6.remainingAds.shift();
                return e6.resolveAds(o4, { wrapperDepth: i3, previousUrl: n3, url: a3 });
              }
              return r5;
            });
          } }, { key: "resolveWrappers", value: function(e6, t4, r4) {
            var i3 = this;
            return new Promise(function(n3) {
              var a3;
              if (t4++, !e6.nextWrapperURL) return delete e6.nextWrapperURL, n3(e6);
              if (t4 >= i3.maxWrapperDepth || -1 !== i3.parentURLs.indexOf(e6.nextWrapperURL)) return e6.errorCode = 302, delete e6.nextWrapperURL, n3(e6);
              e6.nextWrapperURL = w.resolveVastAdTagURI(e6.nextWrapperURL, r4), i3.URLTemplateFilters.forEach(function(t5) {
                e6.nextWrapperURL = t5(e6.nextWrapperURL);
              });
              var o3 = null !== (a3 = i3.parsingOptions.allowMultipleAds) && void 0 !== a3 ? a3 : e6.allowMultipleAds, s3 = e6.sequence;
              i3.fetchVAST(e6.nextWrapperURL, t4, r4, e6).then(function(a4) {
                return i3.parse(a4, { url: e6.nextWrapperURL, previousUrl: r4, wrapperSequence: s3, wrapperDepth: t4, followAdditionalWrappers: e6.followAdditionalWrappers, allowMultipleAds: o3 }).then(function(t5) {
                  if (delete e6.nextWrapperURL, 0 === t5.length) return e6.creatives = [], n3(e6);
                  t5.forEach(function(t6) {
                    t6 && w.mergeWrapperAdData(t6, e6);
                  }), n3(t5);
                });
              }).catch(function(t5) {
                e6.errorCode = 301, e6.errorMessage = t5.message, n3(e6);
              });
            });
          } }, { key: "completeWrapperResolving", value: function(e6) {
            if (0 === e6.ads.length) this.trackVastError(e6.errorURLTemplates, { ERRORCODE: 303 });
            else for (var t4 = e6.ads.length - 1; t4 >= 0; t4--) {
              var r4 = e6.ads[t4];
              (r4.errorCode || 0 === r4.creatives.length) && (this.trackVastError(r4.errorURLTemplates.concat(e6.errorURLTemplates), { ERRORCODE: r4.errorCode || 303 }, { ERRORMESSAGE: r4.errorMessage || "" }, { extensions: r4.extensions }, { system: r4.system }), e6.ads.splice(t4, 1));
            }
          } }]), r3;
        }(K), se = null, le = { data: {}, length: 0, getItem: function(e5) {
          return this.data[e5];
        }, setItem: function(e5, t3) {
          this.data[e5] = t3, this.length = Object.keys(this.data).length;
        }, removeItem: function(e5) {
          delete this.data[e5], this.length = Object.keys(this.data).length;
        }, clear: function() {
          this.data = {}, this.length = 0;
        } }, ue = function() {
          function e5() {
            n2(this, e5), this.storage = this.initStorage();
          }
          return o2(e5, [{ key: "initStorage", value: function() {
            if (se) return se;
            try {
              se = "undefined" != typeof window && null !== window ? window.localStorage || window.sessionStorage : null;
            } catch (e6) {
              se = null;
            }
            return se && !this.isStorageDisabled(se) || (se = le).clear(), se;
          } }, { key: "isStorageDisabled", value: function(e6) {
            var t3 = "__VASTStorage__";
            try {
              if (e6.setItem(t3, t3), e6.getItem(t3) !== t3) return e6.removeItem(t3), true;
            } catch (e7) {
              return true;
            }
            return e6.removeItem(t3), false;
          } }, { key: "getItem", value: function(e6) {
            return this.storage.getItem(e6);
          } }, { key: "setItem", value: function(e6, t3) {
            return this.storage.setItem(e6, t3);
          } }, { key: "removeItem", value: function(e6) {
            return this.storage.removeItem(e6);
          } }, { key: "clear", value: function() {
            return this.storage.clear();
          } }]), e5;
        }(), ce = function() {
          function e5(t3, r3, i3) {
            n2(this, e5), this.cappingFreeLunch = t3 || 0, this.cappingMinimumTimeInterval = r3 || 0, this.defaultOptions = { withCredentials: false, timeout: 0 }, this.vastParser = new oe(), this.storage = i3 || new ue(), void 0 === this.lastSuccessfulAd && (this.lastSuccessfulAd = 0), void 0 === this.totalCalls && (this.totalCalls = 0), void 0 === this.totalCallsTimeout && (this.totalCallsTimeout = 0);
          }
          return o2(e5, [{ key: "getParser", value: function() {
            return this.vastParser;
          } }, { key: "lastSuccessfulAd", get: function() {
            return this.storage.getItem("vast-client-last-successful-ad");
          }, set: function(e6) {
            this.storage.setItem("vast-client-last-successful-ad", e6);
          } }, { key: "totalCalls", get: function() {
            return this.storage.getItem("vast-client-total-calls");
          }, set: function(e6) {
            this.storage.setItem("vast-client-total-calls", e6);
          } }, { key: "totalCallsTimeout", get: function() {
            return this.storage.getItem("vast-client-total-calls-timeout");
          }, set: function(e6) {
            this.storage.setItem("vast-client-total-calls-timeout", e6);
          } }, { key: "hasRemainingAds", value: function() {
            return this.vastParser.remainingAds.length > 0;
          } }, { key: "getNextAds", value: function(e6) {
            return this.vastParser.getRemainingAds(e6);
          } }, { key: "get", value: function(e6) {
            var t3 = this, r3 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {}, i3 = Date.now();
            return (r3 = Object.assign({}, this.defaultOptions, r3)).hasOwnProperty("resolveAll") || (r3.resolveAll = false), this.totalCallsTimeout < i3 ? (this.totalCalls = 1, this.totalCallsTimeout = i3 + 36e5) : this.totalCalls++, new Promise(function(n3, a3) {
              if (t3.cappingFreeLunch >= t3.totalCalls) return a3(new Error("VAST call canceled \u2013 FreeLunch capping not reached yet ".concat(t3.totalCalls, "/").concat(t3.cappingFreeLunch)));
              var o3 = i3 - t3.lastSuccessfulAd;
              if (o3 < 0) t3.lastSuccessfulAd = 0;
              else if (o3 < t3.cappingMinimumTimeInterval) return a3(new Error("VAST call canceled \u2013 (".concat(t3.cappingMinimumTimeInterval, ")ms minimum interval reached")));
              t3.vastParser.getAndParseVAST(e6, r3).then(function(e7) {
                return n3(e7);
              }).catch(function(e7) {
                return a3(e7);
              });
            });
          } }]), e5;
        }(), de = function(e5) {
          l(a3, e5);
          var t3 = p(a3);
          function a3(e6, r3, i3) {
            var o3, s3 = arguments.length > 3 && void 0 !== arguments[3] ? arguments[3] : null;
            for (var l2 in n2(this, a3), (o3 = t3.call(this)).ad = r3, o3.creative = i3, o3.variation = s3, o3.muted = false, o3.impressed = false, o3.skippable = false, o3.trackingEvents = {}, o3.lastPercentage = 0, o3._alreadyTriggeredQuartiles = {}, o3.emitAlwaysEvents = ["creativeView", "start", "firstQuartile", "midpoint", "thirdQuartile", "complete", "resume", "pause", "rewind", "skip", "closeLinear", "close"], o3.creative.trackingEvents) {
              var u2 = o3.creative.trackingEvents[l2];
              o3.trackingEvents[l2] = u2.slice(0);
            }
            return C(o3.creative) ? o3._initLinearTracking() : o3._initVariationTracking(), e6 && o3.on("start", function() {
              e6.lastSuccessfulAd = Date.now();
            }), o3;
          }
          return o2(a3, [{ key: "_initLinearTracking", value: function() {
            this.linear = true, this.skipDelay = this.creative.skipDelay, this.setDuration(this.creative.duration), this.clickThroughURLTemplate = this.creative.videoClickThroughURLTemplate, this.clickTrackingURLTemplates = this.creative.videoClickTrackingURLTemplates;
          } }, { key: "_initVariationTracking", value: function() {
            if (this.linear = false, this.skipDelay = -1, this.variation) {
              for (var e6 in this.variation.trackingEvents) {
                var t4 = this.variation.trackingEvents[e6];
                this.trackingEvents[e6] ? this.trackingEvents[e6] = this.trackingEvents[e6].concat(t4.slice(0)) : this.trackingEvents[e6] = t4.slice(0);
              }
              "nonLinearAd" === this.variation.adType ? (this.clickThroughURLTemplate = this.variation.nonlinearClickThroughURLTemplate, this.clickTrackingURLTemplates = this.variation.nonlinearClickTrackingURLTemplates, this.setDuration(this.variation.minSuggestedDuration)) : function(e7) {
                return "companionAd" === e7.adType;
              }(this.variation) && (this.clickThroughURLTemplate = this.variation.companionClickThroughURLTemplate, this.clickTrackingURLTemplates = this.variation.companionClickTrackingURLTemplates);
            }
          } }, { key: "setDuration", value: function(e6) {
            N.isValidTimeValue(e6) && (this.assetDuration = e6, this.quartiles = { firstQuartile: Math.round(25 * this.assetDuration) / 100, midpoint: Math.round(50 * this.assetDuration) / 100, thirdQuartile: Math.round(75 * this.assetDuration) / 100 });
          } }, { key: "setProgress", value: function(e6) {
            var t4 = this, r3 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {};
            if (N.isValidTimeValue(e6) && "object" === i2(r3)) {
              var n3 = this.skipDelay || -1;
              if (-1 === n3 || this.skippable || (n3 > e6 ? this.emit("skip-countdown", n3 - e6) : (this.skippable = true, this.emit("skip-countdown", 0))), this.assetDuration > 0) {
                var a4 = Math.round(e6 / this.assetDuration * 100), o3 = [];
                if (e6 > 0) {
                  o3.push("start");
                  for (var s3 = this.lastPercentage; s3 < a4; s3++) o3.push("progress-".concat(s3 + 1, "%"));
                  for (var l2 in o3.push("progress-".concat(Math.round(e6))), this.quartiles) this.isQuartileReached(l2, this.quartiles[l2], e6) && (o3.push(l2), this._alreadyTriggeredQuartiles[l2] = true);
                  this.lastPercentage = a4;
                }
                o3.forEach(function(e7) {
                  t4.track(e7, { macros: r3, once: true });
                }), e6 < this.progress && this.track("rewind", { macros: r3 });
              }
              this.progress = e6;
            }
          } }, { key: "isQuartileReached", value: function(e6, t4, r3) {
            var i3 = false;
            return t4 <= r3 && !this._alreadyTriggeredQuartiles[e6] && (i3 = true), i3;
          } }, { key: "setMuted", value: function(e6) {
            var t4 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {};
            "boolean" == typeof e6 && "object" === i2(t4) && (this.muted !== e6 && this.track(e6 ? "mute" : "unmute", { macros: t4 }), this.muted = e6);
          } }, { key: "setPaused", value: function(e6) {
            var t4 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {};
            "boolean" == typeof e6 && "object" === i2(t4) && (this.paused !== e6 && this.track(e6 ? "pause" : "resume", { macros: t4 }), this.paused = e6);
          } }, { key: "setFullscreen", value: function(e6) {
            var t4 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {};
            "boolean" == typeof e6 && "object" === i2(t4) && (this.fullscreen !== e6 && this.track(e6 ? "fullscreen" : "exitFullscreen", { macros: t4 }), this.fullscreen = e6);
          } }, { key: "setExpand", value: function(e6) {
            var t4 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {};
            "boolean" == typeof e6 && "object" === i2(t4) && (this.expanded !== e6 && (this.track(e6 ? "expand" : "collapse", { macros: t4 }), this.track(e6 ? "playerExpand" : "playerCollapse", { macros: t4 })), this.expanded = e6);
          } }, { key: "setSkipDelay", value: function(e6) {
            N.isValidTimeValue(e6) && (this.skipDelay = e6);
          } }, { key: "trackImpression", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            "object" === i2(e6) && (this.impressed || (this.impressed = true, this.trackURLs(this.ad.impressionURLTemplates, e6), this.track("creativeView", { macros: e6 })));
          } }, { key: "error", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {}, t4 = arguments.length > 1 && void 0 !== arguments[1] && arguments[1];
            "object" === i2(e6) && "boolean" == typeof t4 && this.trackURLs(this.ad.errorURLTemplates, e6, { isCustomCode: t4 });
          } }, { key: "errorWithCode", value: function(e6) {
            var t4 = arguments.length > 1 && void 0 !== arguments[1] && arguments[1];
            "string" == typeof e6 && "boolean" == typeof t4 && (this.error({ ERRORCODE: e6 }, t4), console.log("The method errorWithCode is deprecated, please use vast tracker error method instead"));
          } }, { key: "complete", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            "object" === i2(e6) && this.track("complete", { macros: e6 });
          } }, { key: "notUsed", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            "object" === i2(e6) && (this.track("notUsed", { macros: e6 }), this.trackingEvents = []);
          } }, { key: "otherAdInteraction", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            "object" === i2(e6) && this.track("otherAdInteraction", { macros: e6 });
          } }, { key: "acceptInvitation", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            "object" === i2(e6) && this.track("acceptInvitation", { macros: e6 });
          } }, { key: "adExpand", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            "object" === i2(e6) && this.track("adExpand", { macros: e6 });
          } }, { key: "adCollapse", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            "object" === i2(e6) && this.track("adCollapse", { macros: e6 });
          } }, { key: "minimize", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            "object" === i2(e6) && this.track("minimize", { macros: e6 });
          } }, { key: "verificationNotExecuted", value: function(e6) {
            var t4 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {};
            if ("string" == typeof e6 && "object" === i2(t4)) {
              if (!this.ad || !this.ad.adVerifications || !this.ad.adVerifications.length) throw new Error("No adVerifications provided");
              if (!e6) throw new Error("No vendor provided, unable to find associated verificationNotExecuted");
              var r3 = this.ad.adVerifications.find(function(t5) {
                return t5.vendor === e6;
              });
              if (!r3) throw new Error("No associated verification element found for vendor: ".concat(e6));
              var n3 = r3.trackingEvents;
              if (n3 && n3.verificationNotExecuted) {
                var a4 = n3.verificationNotExecuted;
                this.trackURLs(a4, t4), this.emit("verificationNotExecuted", { trackingURLTemplates: a4 });
              }
            }
          } }, { key: "overlayViewDuration", value: function(e6) {
            var t4 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {};
            "string" == typeof e6 && "object" === i2(t4) && (t4.ADPLAYHEAD = e6, this.track("overlayViewDuration", { macros: t4 }));
          } }, { key: "close", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            "object" === i2(e6) && this.track(this.linear ? "closeLinear" : "close", { macros: e6 });
          } }, { key: "skip", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            "object" === i2(e6) && this.track("skip", { macros: e6 });
          } }, { key: "load", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : {};
            "object" === i2(e6) && this.track("loaded", { macros: e6 });
          } }, { key: "click", value: function() {
            var e6 = arguments.length > 0 && void 0 !== arguments[0] ? arguments[0] : null, t4 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {};
            if ((null === e6 || "string" == typeof e6) && "object" === i2(t4)) {
              this.clickTrackingURLTemplates && this.clickTrackingURLTemplates.length && this.trackURLs(this.clickTrackingURLTemplates, t4);
              var n3 = this.clickThroughURLTemplate || e6, a4 = r2({}, t4);
              if (n3) {
                this.progress && (a4.ADPLAYHEAD = this.progressFormatted());
                var o3 = N.resolveURLTemplates([n3], a4)[0];
                this.emit("clickthrough", o3);
              }
            }
          } }, { key: "track", value: function(e6) {
            var t4 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {}, r3 = t4.macros, n3 = void 0 === r3 ? {} : r3, a4 = t4.once, o3 = void 0 !== a4 && a4;
            if ("object" === i2(n3)) {
              "closeLinear" === e6 && !this.trackingEvents[e6] && this.trackingEvents.close && (e6 = "close");
              var s3 = this.trackingEvents[e6], l2 = this.emitAlwaysEvents.indexOf(e6) > -1;
              s3 ? (this.emit(e6, { trackingURLTemplates: s3 }), this.trackURLs(s3, n3)) : l2 && this.emit(e6, null), o3 && (delete this.trackingEvents[e6], l2 && this.emitAlwaysEvents.splice(this.emitAlwaysEvents.indexOf(e6), 1));
            }
          } }, { key: "trackURLs", value: function(e6) {
            var t4, i3, n3 = arguments.length > 1 && void 0 !== arguments[1] ? arguments[1] : {}, a4 = arguments.length > 2 && void 0 !== arguments[2] ? arguments[2] : {}, o3 = r2({}, n3);
            this.linear && (this.creative && this.creative.mediaFiles && this.creative.mediaFiles[0] && this.creative.mediaFiles[0].fileURL && (o3.ASSETURI = this.creative.mediaFiles[0].fileURL), this.progress && (o3.ADPLAYHEAD = this.progressFormatted())), null !== (t4 = this.creative) && void 0 !== t4 && null !== (i3 = t4.universalAdIds) && void 0 !== i3 && i3.length && (o3.UNIVERSALADID = this.creative.universalAdIds.map(function(e7) {
              return e7.idRegistry.concat(" ", e7.value);
            }).join(",")), this.ad && (this.ad.sequence && (o3.PODSEQUENCE = this.ad.sequence), this.ad.adType && (o3.ADTYPE = this.ad.adType), this.ad.adServingId && (o3.ADSERVINGID = this.ad.adServingId), this.ad.categories && this.ad.categories.length && (o3.ADCATEGORIES = this.ad.categories.map(function(e7) {
              return e7.value;
            }).join(",")), this.ad.blockedAdCategories && this.ad.blockedAdCategories.length && (o3.BLOCKEDADCATEGORIES = this.ad.blockedAdCategories)), N.track(e6, o3, a4);
          } }, { key: "convertToTimecode", value: function(e6) {
            if (!N.isValidTimeValue(e6)) return "";
            var t4 = 1e3 * e6, r3 = Math.floor(t4 / 36e5), i3 = Math.floor(t4 / 6e4 % 60), n3 = Math.floor(t4 / 1e3 % 60), a4 = Math.floor(t4 % 1e3);
            return "".concat(N.addLeadingZeros(r3, 2), ":").concat(N.addLeadingZeros(i3, 2), ":").concat(N.addLeadingZeros(n3, 2), ".").concat(N.addLeadingZeros(a4, 3));
          } }, { key: "progressFormatted", value: function() {
            return this.convertToTimecode(this.progress);
          } }]), a3;
        }(K);
        e4.VASTClient = ce, e4.VASTParser = oe, e4.VASTTracker = de, Object.defineProperty(e4, "__esModule", { value: true });
      });
    }
  });

  // node_modules/@dailymotion/vmap/dist/vmap-js.js
  var vmap_js_exports = {};
  __export(vmap_js_exports, {
    default: () => o
  });
  function t(t2, e4) {
    if (!(t2 instanceof e4)) throw new TypeError("Cannot call a class as a function");
  }
  function e(t2, e4) {
    for (var a2 = 0; a2 < e4.length; a2++) {
      var n2 = e4[a2];
      n2.enumerable = n2.enumerable || false, n2.configurable = true, "value" in n2 && (n2.writable = true), Object.defineProperty(t2, n2.key, n2);
    }
  }
  function a(t2, a2, n2) {
    return a2 && e(t2.prototype, a2), n2 && e(t2, n2), Object.defineProperty(t2, "prototype", { writable: false }), t2;
  }
  function i(t2, e4) {
    var a2 = [];
    for (var n2 in t2.childNodes) {
      var i2 = t2.childNodes[n2];
      i2.nodeName !== e4 && e4 !== "vmap:".concat(i2.nodeName) && i2.nodeName !== "vmap:".concat(e4) || a2.push(i2);
    }
    return a2;
  }
  function r(t2) {
    var e4 = { attributes: {}, children: {}, value: {} };
    e4.value = function(t3) {
      if (!t3 || !t3.childNodes) return {};
      var e5 = t3.childNodes, a3 = [];
      for (var n3 in e5) {
        var i3 = e5[n3];
        "#cdata-section" === i3.nodeName && a3.push(i3);
      }
      if (a3 && a3.length > 0) try {
        return JSON.parse(a3[0].data);
      } catch (t4) {
      }
      var r2 = "";
      for (var s3 in e5) {
        var o3 = e5[s3];
        switch (o3.nodeName) {
          case "#text":
            r2 += o3.textContent.trim();
            break;
          case "#cdata-section":
            r2 += o3.data;
        }
      }
      return r2;
    }(t2);
    var a2 = t2.attributes;
    if (a2) for (var n2 in a2) {
      var i2 = a2[n2];
      i2.nodeName && void 0 !== i2.nodeValue && null !== i2.nodeValue && (e4.attributes[i2.nodeName] = i2.nodeValue);
    }
    var s2 = t2.childNodes;
    if (s2) for (var o2 in s2) {
      var c = s2[o2];
      c.nodeName && "#" !== c.nodeName.substring(0, 1) && (e4.children[c.nodeName] = r(c));
    }
    return e4;
  }
  var n, s, o;
  var init_vmap_js = __esm({
    "node_modules/@dailymotion/vmap/dist/vmap-js.js"() {
      n = a(function e2(a2) {
        for (var n2 in t(this, e2), this.id = a2.getAttribute("id"), this.allowMultipleAds = a2.getAttribute("allowMultipleAds"), this.followRedirects = a2.getAttribute("followRedirects"), this.vastAdData = null, this.adTagURI = null, this.customData = null, a2.childNodes) {
          var i2 = a2.childNodes[n2];
          switch (i2.localName) {
            case "AdTagURI":
              this.adTagURI = { templateType: i2.getAttribute("templateType"), uri: (i2.textContent || i2.text || "").trim() };
              break;
            case "VASTAdData":
              for (this.vastAdData = i2.firstChild; this.vastAdData && 1 !== this.vastAdData.nodeType; ) this.vastAdData = this.vastAdData.nextSibling;
              break;
            case "CustomAdData":
              this.customData = i2;
          }
        }
      });
      s = function() {
        function e4(a2) {
          for (var s2 in t(this, e4), this.timeOffset = a2.getAttribute("timeOffset"), this.breakType = a2.getAttribute("breakType"), this.breakId = a2.getAttribute("breakId"), this.repeatAfter = a2.getAttribute("repeatAfter"), this.adSource = null, this.trackingEvents = [], this.extensions = [], a2.childNodes) {
            var o2 = a2.childNodes[s2];
            switch (o2.localName) {
              case "AdSource":
                this.adSource = new n(o2);
                break;
              case "TrackingEvents":
                for (var c in o2.childNodes) {
                  var d = o2.childNodes[c];
                  "Tracking" === d.localName && this.trackingEvents.push({ event: d.getAttribute("event"), uri: (d.textContent || d.text || "").trim() });
                }
                break;
              case "Extensions":
                this.extensions = i(o2, "Extension").map(function(t2) {
                  return r(t2);
                });
            }
          }
        }
        return a(e4, [{ key: "track", value: function(t2, e5) {
          for (var a2 in this.trackingEvents) {
            var n2 = this.trackingEvents[a2];
            if (n2.event === t2) {
              var i2 = n2.uri;
              "error" === n2.event && (i2 = i2.replace("[ERRORCODE]", e5)), this.tracker(i2);
            }
          }
        } }, { key: "tracker", value: function(t2) {
          "undefined" != typeof window && null !== window && (new Image().src = t2);
        } }]), e4;
      }();
      o = a(function e3(a2) {
        if (t(this, e3), !a2 || !a2.documentElement || "VMAP" !== a2.documentElement.localName) throw new Error("Not a VMAP document");
        for (var n2 in this.version = a2.documentElement.getAttribute("version"), this.adBreaks = [], this.extensions = [], a2.documentElement.childNodes) {
          var o2 = a2.documentElement.childNodes[n2];
          switch (o2.localName) {
            case "AdBreak":
              this.adBreaks.push(new s(o2));
              break;
            case "Extensions":
              this.extensions = i(o2, "Extension").map(function(t2) {
                return r(t2);
              });
          }
        }
      });
    }
  });

  // node_modules/mitt/dist/mitt.mjs
  var mitt_exports = {};
  __export(mitt_exports, {
    default: () => mitt_default
  });
  function mitt_default(n2) {
    return { all: n2 = n2 || /* @__PURE__ */ new Map(), on: function(t2, e4) {
      var i2 = n2.get(t2);
      i2 ? i2.push(e4) : n2.set(t2, [e4]);
    }, off: function(t2, e4) {
      var i2 = n2.get(t2);
      i2 && (e4 ? i2.splice(i2.indexOf(e4) >>> 0, 1) : n2.set(t2, []));
    }, emit: function(t2, e4) {
      var i2 = n2.get(t2);
      i2 && i2.slice().map(function(n3) {
        n3(e4);
      }), (i2 = n2.get("*")) && i2.slice().map(function(n3) {
        n3(t2, e4);
      });
    } };
  }
  var init_mitt = __esm({
    "node_modules/mitt/dist/mitt.mjs"() {
    }
  });

  // node_modules/@eyevinn/csai-manager/dist/index.js
  var require_dist2 = __commonJS({
    "node_modules/@eyevinn/csai-manager/dist/index.js"(exports, module) {
      var $g5Y9E$eyevinnvideoeventfilter = require_dist();
      var $g5Y9E$dailymotionvastclient = require_vast_client_min();
      var $g5Y9E$dailymotionvmap = (init_vmap_js(), __toCommonJS(vmap_js_exports));
      var $g5Y9E$mitt = (init_mitt(), __toCommonJS(mitt_exports));
      function $parcel$export(e4, n2, v, s2) {
        Object.defineProperty(e4, n2, { get: v, set: s2, enumerable: true, configurable: true });
      }
      function $parcel$exportWildcard(dest, source) {
        Object.keys(source).forEach(function(key) {
          if (key === "default" || key === "__esModule" || dest.hasOwnProperty(key)) {
            return;
          }
          Object.defineProperty(dest, key, {
            enumerable: true,
            get: function get() {
              return source[key];
            }
          });
        });
        return dest;
      }
      function $parcel$interopDefault(a2) {
        return a2 && a2.__esModule ? a2.default : a2;
      }
      $parcel$export(module.exports, "AdBreakTrackingEvent", () => $6a91d1a6b96ec270$export$8ee40f6ae4909ee9);
      $parcel$export(module.exports, "AdTrackingEvent", () => $6a91d1a6b96ec270$export$af003d03c08e493d);
      var $020ad56d15653aeb$exports = {};
      $parcel$export($020ad56d15653aeb$exports, "CSAIManager", () => $020ad56d15653aeb$export$b74fc88014c397b3, (v) => $020ad56d15653aeb$export$b74fc88014c397b3 = v);
      var $82676b94e7d3e1ec$exports = {};
      $parcel$export($82676b94e7d3e1ec$exports, "AdServerService", () => $82676b94e7d3e1ec$export$3352be5704672342, (v) => $82676b94e7d3e1ec$export$3352be5704672342 = v);
      var $6a91d1a6b96ec270$export$af003d03c08e493d;
      (function($6a91d1a6b96ec270$export$af003d03c08e493d2) {
        $6a91d1a6b96ec270$export$af003d03c08e493d2["START"] = "start";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["IMPRESSION"] = "impression";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["EXPAND"] = "expand";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["MUTE"] = "mute";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["UNMUTE"] = "unmute";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["PAUSE"] = "pause";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["RESUME"] = "resume";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["REWIND"] = "rewind";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["CLOSE"] = "close";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["COMPLETE"] = "complete";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["FIRST_QUARTILE"] = "firstQuartile";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["MIDPOINT"] = "midpoint";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["THIRD_QUARTILE"] = "thirdQuartile";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["CLICK_THROUGH"] = "clickThrough";
        $6a91d1a6b96ec270$export$af003d03c08e493d2["ERROR"] = "error";
      })($6a91d1a6b96ec270$export$af003d03c08e493d || ($6a91d1a6b96ec270$export$af003d03c08e493d = {}));
      var $6a91d1a6b96ec270$export$8ee40f6ae4909ee9;
      (function($6a91d1a6b96ec270$export$8ee40f6ae4909ee92) {
        $6a91d1a6b96ec270$export$8ee40f6ae4909ee92["BREAK_START"] = "breakStart";
        $6a91d1a6b96ec270$export$8ee40f6ae4909ee92["BREAK_END"] = "breakEnd";
      })($6a91d1a6b96ec270$export$8ee40f6ae4909ee9 || ($6a91d1a6b96ec270$export$8ee40f6ae4909ee9 = {}));
      var $6a91d1a6b96ec270$export$f9cba49277c3a748;
      (function($6a91d1a6b96ec270$export$f9cba49277c3a7482) {
        $6a91d1a6b96ec270$export$f9cba49277c3a7482["ClientSide"] = "csai";
        $6a91d1a6b96ec270$export$f9cba49277c3a7482["ServerSide"] = "ssai";
      })($6a91d1a6b96ec270$export$f9cba49277c3a748 || ($6a91d1a6b96ec270$export$f9cba49277c3a748 = {}));
      var $6a91d1a6b96ec270$export$21ab339cd8e953dc;
      (function($6a91d1a6b96ec270$export$21ab339cd8e953dc2) {
        $6a91d1a6b96ec270$export$21ab339cd8e953dc2["Preroll"] = "preroll";
        $6a91d1a6b96ec270$export$21ab339cd8e953dc2["Midroll"] = "midroll";
        $6a91d1a6b96ec270$export$21ab339cd8e953dc2["Postroll"] = "postroll";
      })($6a91d1a6b96ec270$export$21ab339cd8e953dc || ($6a91d1a6b96ec270$export$21ab339cd8e953dc = {}));
      var $6a91d1a6b96ec270$export$3d6415b1a42429de;
      (function($6a91d1a6b96ec270$export$3d6415b1a42429de2) {
        $6a91d1a6b96ec270$export$3d6415b1a42429de2["NORMAL"] = "NORMAL";
        $6a91d1a6b96ec270$export$3d6415b1a42429de2["SPONSOR"] = "BUMPER";
        $6a91d1a6b96ec270$export$3d6415b1a42429de2["VIGNETTE"] = "VIGNETTE";
        $6a91d1a6b96ec270$export$3d6415b1a42429de2["TRAILER"] = "TRAILER";
      })($6a91d1a6b96ec270$export$3d6415b1a42429de || ($6a91d1a6b96ec270$export$3d6415b1a42429de = {}));
      function $c2c23ffc2593fda7$export$7d60f72cc3d90ae5(dateString) {
        var p = dateString.split(":"), s2 = 0, m = 1;
        while (p.length > 0) {
          s2 += m * parseInt(p.pop(), 10);
          m *= 60;
        }
        return s2;
      }
      function $c2c23ffc2593fda7$export$ff9d762dbf7e2cc6(contentVideoElement) {
        var adVideoElement = document.createElement("video");
        adVideoElement.style.position = "absolute";
        adVideoElement.style.top = "0";
        adVideoElement.style.left = "0";
        adVideoElement.style.width = "100%";
        adVideoElement.style.height = "100%";
        adVideoElement.style.backgroundColor = "black";
        adVideoElement.style.display = "none";
        if (contentVideoElement) {
          adVideoElement.playsInline = contentVideoElement.playsInline;
          adVideoElement.muted = contentVideoElement.muted;
          adVideoElement.volume = contentVideoElement.volume;
        }
        return adVideoElement;
      }
      var $82676b94e7d3e1ec$var$__assign = function() {
        $82676b94e7d3e1ec$var$__assign = Object.assign || function(t2) {
          for (var s2, i2 = 1, n2 = arguments.length; i2 < n2; i2++) {
            s2 = arguments[i2];
            for (var p in s2) if (Object.prototype.hasOwnProperty.call(s2, p)) t2[p] = s2[p];
          }
          return t2;
        };
        return $82676b94e7d3e1ec$var$__assign.apply(this, arguments);
      };
      var $82676b94e7d3e1ec$var$__awaiter = function(thisArg, _arguments, P, generator) {
        function adopt(value) {
          return value instanceof P ? value : new P(function(resolve) {
            resolve(value);
          });
        }
        return new (P || (P = Promise))(function(resolve, reject) {
          function fulfilled(value) {
            try {
              step(generator.next(value));
            } catch (e4) {
              reject(e4);
            }
          }
          function rejected(value) {
            try {
              step(generator["throw"](value));
            } catch (e4) {
              reject(e4);
            }
          }
          function step(result) {
            result.done ? resolve(result.value) : adopt(result.value).then(fulfilled, rejected);
          }
          step((generator = generator.apply(thisArg, _arguments || [])).next());
        });
      };
      var $82676b94e7d3e1ec$var$__generator = function(thisArg, body) {
        var _ = {
          label: 0,
          sent: function() {
            if (t2[0] & 1) throw t2[1];
            return t2[1];
          },
          trys: [],
          ops: []
        }, f, y, t2, g;
        return g = {
          next: verb(0),
          "throw": verb(1),
          "return": verb(2)
        }, typeof Symbol === "function" && (g[Symbol.iterator] = function() {
          return this;
        }), g;
        function verb(n2) {
          return function(v) {
            return step([
              n2,
              v
            ]);
          };
        }
        function step(op) {
          if (f) throw new TypeError("Generator is already executing.");
          while (_) try {
            if (f = 1, y && (t2 = op[0] & 2 ? y["return"] : op[0] ? y["throw"] || ((t2 = y["return"]) && t2.call(y), 0) : y.next) && !(t2 = t2.call(y, op[1])).done) return t2;
            if (y = 0, t2) op = [
              op[0] & 2,
              t2.value
            ];
            switch (op[0]) {
              case 0:
              case 1:
                t2 = op;
                break;
              case 4:
                _.label++;
                return {
                  value: op[1],
                  done: false
                };
              case 5:
                _.label++;
                y = op[1];
                op = [
                  0
                ];
                continue;
              case 7:
                op = _.ops.pop();
                _.trys.pop();
                continue;
              default:
                if (!(t2 = _.trys, t2 = t2.length > 0 && t2[t2.length - 1]) && (op[0] === 6 || op[0] === 2)) {
                  _ = 0;
                  continue;
                }
                if (op[0] === 3 && (!t2 || op[1] > t2[0] && op[1] < t2[3])) {
                  _.label = op[1];
                  break;
                }
                if (op[0] === 6 && _.label < t2[1]) {
                  _.label = t2[1];
                  t2 = op;
                  break;
                }
                if (t2 && _.label < t2[2]) {
                  _.label = t2[2];
                  _.ops.push(op);
                  break;
                }
                if (t2[2]) _.ops.pop();
                _.trys.pop();
                continue;
            }
            op = body.call(thisArg, _);
          } catch (e4) {
            op = [
              6,
              e4
            ];
            y = 0;
          } finally {
            f = t2 = 0;
          }
          if (op[0] & 5) throw op[1];
          return {
            value: op[0] ? op[1] : void 0,
            done: true
          };
        }
      };
      var $82676b94e7d3e1ec$var$__spreadArray = function(to, from, pack) {
        if (pack || arguments.length === 2) {
          for (var i2 = 0, l = from.length, ar; i2 < l; i2++) if (ar || !(i2 in from)) {
            if (!ar) ar = Array.prototype.slice.call(from, 0, i2);
            ar[i2] = from[i2];
          }
        }
        return to.concat(ar || Array.prototype.slice.call(from));
      };
      var $82676b94e7d3e1ec$export$3352be5704672342 = (
        /** @class */
        function() {
          function $82676b94e7d3e1ec$export$3352be57046723422(debug) {
            if (debug === void 0) debug = false;
            this.debug = false;
            this.estimatedBandwidth = 500;
            this.debug = !!debug;
            this.vastParser = new $g5Y9E$dailymotionvastclient.VASTParser();
          }
          $82676b94e7d3e1ec$export$3352be57046723422.prototype.getVMAP = function(url) {
            return $82676b94e7d3e1ec$var$__awaiter(this, void 0, Promise, function() {
              var vmapObject, adBreaks;
              return $82676b94e7d3e1ec$var$__generator(this, function(_a) {
                switch (_a.label) {
                  case 0:
                    if (this.debug) console.debug("[CSAIManager] getVMAP", url);
                    return [
                      4,
                      this.fetchAdsVMAP(url)
                    ];
                  case 1:
                    vmapObject = _a.sent();
                    return [
                      4,
                      this.resolveAds(vmapObject)
                    ];
                  case 2:
                    adBreaks = _a.sent();
                    if (this.debug) console.debug("[CSAIManager] resolved VMAP to ad breaks", adBreaks);
                    return [
                      2,
                      adBreaks
                    ];
                }
              });
            });
          };
          $82676b94e7d3e1ec$export$3352be57046723422.prototype.getVASTs = function(vastItems) {
            return $82676b94e7d3e1ec$var$__awaiter(this, void 0, Promise, function() {
              var adBreaks, _i, vastItems_1, vastItem, vastAdBreak, adBreakAds;
              return $82676b94e7d3e1ec$var$__generator(this, function(_a) {
                switch (_a.label) {
                  case 0:
                    if (this.debug) console.debug("[CSAIManager] getVASTs", vastItems);
                    adBreaks = [];
                    _i = 0, vastItems_1 = vastItems;
                    _a.label = 1;
                  case 1:
                    if (!(_i < vastItems_1.length)) return [
                      3,
                      4
                    ];
                    vastItem = vastItems_1[_i];
                    return [
                      4,
                      this.vastParser.getAndParseVAST(vastItem.vastUrl)
                    ];
                  case 2:
                    vastAdBreak = _a.sent();
                    if (!vastAdBreak) return [
                      2
                      /*return*/
                    ];
                    adBreakAds = vastAdBreak.ads;
                    adBreaks.push(this.mapAdBreakObject({
                      timeOffset: vastItem.timeOffset.toString()
                    }, adBreakAds));
                    _a.label = 3;
                  case 3:
                    _i++;
                    return [
                      3,
                      1
                    ];
                  case 4:
                    if (this.debug) console.debug("[CSAIManager] resolved VAST to ad break", adBreaks);
                    return [
                      2,
                      adBreaks
                    ];
                }
              });
            });
          };
          $82676b94e7d3e1ec$export$3352be57046723422.prototype.getVast = function(vastUrl) {
            return $82676b94e7d3e1ec$var$__awaiter(this, void 0, Promise, function() {
              var vastAdBreak, adBreakAds, adbreak;
              return $82676b94e7d3e1ec$var$__generator(this, function(_a) {
                switch (_a.label) {
                  case 0:
                    if (this.debug) console.debug("[CSAIManager] get vast", vastUrl);
                    return [
                      4,
                      this.vastParser.getAndParseVAST(vastUrl)
                    ];
                  case 1:
                    vastAdBreak = _a.sent();
                    if (!vastAdBreak) return [
                      2
                      /*return*/
                    ];
                    adBreakAds = vastAdBreak.ads;
                    adbreak = this.mapAdBreakObject({
                      timeOffset: "100"
                    }, adBreakAds);
                    if (this.debug) console.debug("[CSAIManager] resolved vast to ad break", adbreak);
                    return [
                      2,
                      adbreak
                    ];
                }
              });
            });
          };
          $82676b94e7d3e1ec$export$3352be57046723422.prototype.fetchAdsVMAP = function(u) {
            return $82676b94e7d3e1ec$var$__awaiter(this, void 0, Promise, function() {
              var response, xml, xmlParser, xmlDoc, vmapObject;
              return $82676b94e7d3e1ec$var$__generator(this, function(_a) {
                switch (_a.label) {
                  case 0:
                    return [
                      4,
                      fetch(u)
                    ];
                  case 1:
                    response = _a.sent();
                    return [
                      4,
                      response.text()
                    ];
                  case 2:
                    xml = _a.sent();
                    xmlParser = new DOMParser();
                    xmlDoc = xmlParser.parseFromString(xml, "text/xml");
                    vmapObject = new ($parcel$interopDefault($g5Y9E$dailymotionvmap))(xmlDoc);
                    return [
                      2,
                      vmapObject
                    ];
                }
              });
            });
          };
          $82676b94e7d3e1ec$export$3352be57046723422.prototype.resolveAds = function(vmapObject) {
            var _a;
            return $82676b94e7d3e1ec$var$__awaiter(this, void 0, Promise, function() {
              var adBreaks, _i, _b, adBreak, adsInBreak, adBreakAds, options;
              return $82676b94e7d3e1ec$var$__generator(this, function(_c) {
                switch (_c.label) {
                  case 0:
                    adBreaks = [];
                    _i = 0, _b = vmapObject.adBreaks;
                    _c.label = 1;
                  case 1:
                    if (!(_i < _b.length)) return [
                      3,
                      5
                    ];
                    adBreak = _b[_i];
                    if (adBreak.breakType !== "linear") return [
                      2,
                      adBreaks
                    ];
                    adsInBreak = (_a = adBreak.adSource) === null || _a === void 0 ? void 0 : _a.vastAdData;
                    adBreakAds = [];
                    if (!adsInBreak) return [
                      3,
                      3
                    ];
                    options = {
                      isRootVAST: true,
                      timeout: 1e4,
                      withCredentials: true,
                      wrapperLimit: 10,
                      followAdditionalWrappers: true
                    };
                    this.vastParser.initParsingStatus(options);
                    return [
                      4,
                      this.vastParser.parseVAST({
                        documentElement: adsInBreak
                      }, options)
                    ];
                  case 2:
                    adBreakAds = _c.sent().ads;
                    this.estimatedBandwidth = this.vastParser.getEstimatedBitrate();
                    _c.label = 3;
                  case 3:
                    adBreaks.push(this.mapAdBreakObject(adBreak, adBreakAds));
                    _c.label = 4;
                  case 4:
                    _i++;
                    return [
                      3,
                      1
                    ];
                  case 5:
                    return [
                      2,
                      adBreaks
                    ];
                }
              });
            });
          };
          $82676b94e7d3e1ec$export$3352be57046723422.prototype.mapAdBreakObject = function(adBreak, ads) {
            var _this = this;
            var _a, _b, _c, _d;
            var adBreakObject = {
              insertionType: $6a91d1a6b96ec270$export$f9cba49277c3a748.ClientSide,
              breakType: adBreak.timeOffset === "start" || adBreak.timeOffset === "0" ? $6a91d1a6b96ec270$export$21ab339cd8e953dc.Preroll : $6a91d1a6b96ec270$export$21ab339cd8e953dc.Midroll,
              timeOffset: adBreak.timeOffset === "start" || adBreak.timeOffset === "0" ? 0 : $c2c23ffc2593fda7$export$7d60f72cc3d90ae5(adBreak.timeOffset),
              ads: ads === null || ads === void 0 ? void 0 : ads.map(function(ad) {
                return _this.mapAdsObject(ad);
              }).filter(function(ad) {
                return ad !== null;
              }),
              trackingEvents: {
                breakStart: ((_b = (_a = adBreak.trackingEvents) === null || _a === void 0 ? void 0 : _a.filter(function(abte) {
                  return abte.event === $6a91d1a6b96ec270$export$8ee40f6ae4909ee9.BREAK_START;
                })) === null || _b === void 0 ? void 0 : _b.map(function(abte) {
                  return abte.uri;
                })) || [],
                breakEnd: ((_d = (_c = adBreak.trackingEvents) === null || _c === void 0 ? void 0 : _c.filter(function(abte) {
                  return abte.event === $6a91d1a6b96ec270$export$8ee40f6ae4909ee9.BREAK_END;
                })) === null || _d === void 0 ? void 0 : _d.map(function(abte) {
                  return abte.uri;
                })) || []
              }
            };
            return adBreakObject;
          };
          $82676b94e7d3e1ec$export$3352be57046723422.prototype.mapAdsObject = function(ad) {
            var _this = this;
            var _a, _b, _c, _d, _e;
            var adServerExtension = ad.extensions.find(function(extension) {
              return extension.attributes.type === "AdServer";
            });
            var customAdId = ((_b = (_a = adServerExtension === null || adServerExtension === void 0 ? void 0 : adServerExtension.children.find(function(ext) {
              return ext.name === "AdInfo";
            })) === null || _a === void 0 ? void 0 : _a.attributes) === null || _b === void 0 ? void 0 : _b.customaid) || void 0;
            var variant = ((_d = (_c = adServerExtension === null || adServerExtension === void 0 ? void 0 : adServerExtension.children.find(function(ext) {
              return ext.name === "AdInfo";
            })) === null || _c === void 0 ? void 0 : _c.attributes) === null || _d === void 0 ? void 0 : _d.variant) || $6a91d1a6b96ec270$export$3d6415b1a42429de.NORMAL;
            var creative1 = this.findCreative(ad.creatives.map(function(creative) {
              return _this.mapCreativeObject(creative);
            }));
            if (!creative1) return null;
            var adObject = {
              id: ad.id,
              customAdId,
              programmatic: customAdId === "PROGRAMMATIC",
              system: (_e = ad.system) === null || _e === void 0 ? void 0 : _e.value,
              sequence: ad.sequence,
              title: ad.title,
              variant,
              creative: creative1,
              errorUrlTemplates: ad.errorURLTemplates,
              impressionUrlTemplates: ad.impressionURLTemplates.map(function(impressionUrlTemplate) {
                return impressionUrlTemplate.url;
              })
            };
            return adObject;
          };
          $82676b94e7d3e1ec$export$3352be57046723422.prototype.findCreative = function(creatives) {
            return creatives.find(function(creative) {
              return creative.type === "linear" && creative.mediafiles.length > 0;
            });
          };
          $82676b94e7d3e1ec$export$3352be57046723422.prototype.mapCreativeObject = function(creative) {
            var _a;
            var _this = this;
            var creativeObject = {
              id: creative.id,
              adId: creative.adId,
              type: creative.type,
              duration: creative.duration,
              mediafiles: this.filterMediaFiles(creative.mediaFiles.map(function(mediaFile) {
                return _this.mapMediaFileObject(mediaFile);
              })),
              trackingEvents: $82676b94e7d3e1ec$var$__assign((_a = {}, _a[$6a91d1a6b96ec270$export$af003d03c08e493d.CLICK_THROUGH] = $82676b94e7d3e1ec$var$__spreadArray([], creative.videoClickTrackingURLTemplates, true), _a), creative.trackingEvents),
              clickThroughUrlTemplate: creative.videoClickThroughURLTemplate
            };
            return creativeObject;
          };
          $82676b94e7d3e1ec$export$3352be57046723422.prototype.filterMediaFiles = function(mediaFiles) {
            var _this = this;
            var playableMediaFiles = mediaFiles.filter(function(mediaFile) {
              return mediaFile.mimeType === "video/mp4";
            });
            var files = playableMediaFiles.filter(function(mediaFile) {
              return mediaFile.mimeType === "video/mp4" && mediaFile.fileUrl.length > 0 && (!mediaFile.bitrate || mediaFile.bitrate < _this.estimatedBandwidth);
            });
            if (files.length === 0) files = playableMediaFiles;
            return files.sort(function(a2, b) {
              return a2.bitrate && b.bitrate ? a2.bitrate - b.bitrate : 0;
            });
          };
          $82676b94e7d3e1ec$export$3352be57046723422.prototype.mapMediaFileObject = function(mediaFile) {
            var mediaFileObject = {
              id: mediaFile.id,
              mimeType: mediaFile.mimeType,
              fileUrl: mediaFile.fileURL,
              bitrate: mediaFile.bitrate,
              height: mediaFile.height,
              width: mediaFile.width
            };
            return mediaFileObject;
          };
          return $82676b94e7d3e1ec$export$3352be57046723422;
        }()
      );
      var $cc312ea0fc7c8651$export$691d3e4b1045a188 = (
        /** @class */
        function() {
          function $cc312ea0fc7c8651$export$691d3e4b1045a1882() {
            this.emitter = $parcel$interopDefault($g5Y9E$mitt)();
          }
          $cc312ea0fc7c8651$export$691d3e4b1045a1882.prototype.on = function(event, handler) {
            this.emitter.on.apply(this, [
              event,
              handler
            ]);
          };
          $cc312ea0fc7c8651$export$691d3e4b1045a1882.prototype.off = function(event, handler) {
            if (this.emitter) this.emitter.off.apply(this, [
              event,
              handler
            ]);
          };
          $cc312ea0fc7c8651$export$691d3e4b1045a1882.prototype.clear = function() {
            this.emitter.all.clear();
          };
          $cc312ea0fc7c8651$export$691d3e4b1045a1882.prototype.emit = function(event, data) {
            if (this.emitter) this.emitter.emit.apply(this, [
              event,
              data
            ]);
          };
          return $cc312ea0fc7c8651$export$691d3e4b1045a1882;
        }()
      );
      function $e68d46ff2e90f1a5$export$d2858fcef9c76970(initOptions) {
        var _a;
        if (!initOptions.container && !initOptions.adVideoElement) {
          console.warn("[CSAIManager] container or adVideoElement is expected, choosing the parent of contentVideoElement as container");
          initOptions.container = initOptions.contentVideoElement.parentElement;
        }
        if (initOptions.container && initOptions.adVideoElement) {
          console.warn("[CSAIManager] either container or adVideoElement is expected, not both, choosing the adVideoElement");
          delete initOptions.container;
        }
        if (!initOptions.isLive && !initOptions.vmapUrl && !initOptions.adBreakVASTList) console.error("[CSAIManager] vmapUrl or adBreakVASTList is required");
        if (initOptions.vmapUrl && initOptions.adBreakVASTList) {
          console.warn("[CSAIManager] either vmapUrl or adBreakVASTList is expected, not both, choosing the adBreakVASTList");
          delete initOptions.vmapUrl;
        }
        if (initOptions.isLive && (initOptions.vmapUrl || ((_a = initOptions.adBreakVASTList) === null || _a === void 0 ? void 0 : _a.length) > 1)) console.warn("[CSAIManager] isLive is true, vmapUrl and adBreakVASTList are not expected, ignoring them");
        return initOptions;
      }
      var $020ad56d15653aeb$var$__extends = /* @__PURE__ */ function() {
        var extendStatics = function(d1, b1) {
          extendStatics = Object.setPrototypeOf || {
            __proto__: []
          } instanceof Array && function(d, b) {
            d.__proto__ = b;
          } || function(d, b) {
            for (var p in b) if (Object.prototype.hasOwnProperty.call(b, p)) d[p] = b[p];
          };
          return extendStatics(d1, b1);
        };
        return function(d, b) {
          if (typeof b !== "function" && b !== null) throw new TypeError("Class extends value " + String(b) + " is not a constructor or null");
          extendStatics(d, b);
          function __() {
            this.constructor = d;
          }
          d.prototype = b === null ? Object.create(b) : (__.prototype = b.prototype, new __());
        };
      }();
      var $020ad56d15653aeb$var$__awaiter = function(thisArg, _arguments, P, generator) {
        function adopt(value) {
          return value instanceof P ? value : new P(function(resolve) {
            resolve(value);
          });
        }
        return new (P || (P = Promise))(function(resolve, reject) {
          function fulfilled(value) {
            try {
              step(generator.next(value));
            } catch (e4) {
              reject(e4);
            }
          }
          function rejected(value) {
            try {
              step(generator["throw"](value));
            } catch (e4) {
              reject(e4);
            }
          }
          function step(result) {
            result.done ? resolve(result.value) : adopt(result.value).then(fulfilled, rejected);
          }
          step((generator = generator.apply(thisArg, _arguments || [])).next());
        });
      };
      var $020ad56d15653aeb$var$__generator = function(thisArg, body) {
        var _ = {
          label: 0,
          sent: function() {
            if (t2[0] & 1) throw t2[1];
            return t2[1];
          },
          trys: [],
          ops: []
        }, f, y, t2, g;
        return g = {
          next: verb(0),
          "throw": verb(1),
          "return": verb(2)
        }, typeof Symbol === "function" && (g[Symbol.iterator] = function() {
          return this;
        }), g;
        function verb(n2) {
          return function(v) {
            return step([
              n2,
              v
            ]);
          };
        }
        function step(op) {
          if (f) throw new TypeError("Generator is already executing.");
          while (_) try {
            if (f = 1, y && (t2 = op[0] & 2 ? y["return"] : op[0] ? y["throw"] || ((t2 = y["return"]) && t2.call(y), 0) : y.next) && !(t2 = t2.call(y, op[1])).done) return t2;
            if (y = 0, t2) op = [
              op[0] & 2,
              t2.value
            ];
            switch (op[0]) {
              case 0:
              case 1:
                t2 = op;
                break;
              case 4:
                _.label++;
                return {
                  value: op[1],
                  done: false
                };
              case 5:
                _.label++;
                y = op[1];
                op = [
                  0
                ];
                continue;
              case 7:
                op = _.ops.pop();
                _.trys.pop();
                continue;
              default:
                if (!(t2 = _.trys, t2 = t2.length > 0 && t2[t2.length - 1]) && (op[0] === 6 || op[0] === 2)) {
                  _ = 0;
                  continue;
                }
                if (op[0] === 3 && (!t2 || op[1] > t2[0] && op[1] < t2[3])) {
                  _.label = op[1];
                  break;
                }
                if (op[0] === 6 && _.label < t2[1]) {
                  _.label = t2[1];
                  t2 = op;
                  break;
                }
                if (t2 && _.label < t2[2]) {
                  _.label = t2[2];
                  _.ops.push(op);
                  break;
                }
                if (t2[2]) _.ops.pop();
                _.trys.pop();
                continue;
            }
            op = body.call(thisArg, _);
          } catch (e4) {
            op = [
              6,
              e4
            ];
            y = 0;
          } finally {
            f = t2 = 0;
          }
          if (op[0] & 5) throw op[1];
          return {
            value: op[0] ? op[1] : void 0,
            done: true
          };
        }
      };
      var $020ad56d15653aeb$export$b74fc88014c397b3 = (
        /** @class */
        function(_super) {
          $020ad56d15653aeb$var$__extends($020ad56d15653aeb$export$b74fc88014c397b32, _super);
          function $020ad56d15653aeb$export$b74fc88014c397b32(initOptions) {
            var _this = _super.call(this) || this;
            _this.debug = false;
            _this.autoManagePlayback = true;
            _this.adBreaks = [];
            _this.adMarkers = [];
            _this.currentAdBreakVideos = [];
            _this.validCurrentTime = 0;
            _this.trackedAdBreaks = {};
            _this.trackedAds = {};
            _this.debug = !!initOptions.debug;
            _this.initOptions = initOptions;
            _this.state = "idle";
            _this.adServerService = new $82676b94e7d3e1ec$exports.AdServerService(_this.debug);
            initOptions = $e68d46ff2e90f1a5$export$d2858fcef9c76970(initOptions);
            if (_this.autoManagePlayback) initOptions.contentVideoElement.pause();
            _this.contentVideoElement = initOptions.contentVideoElement;
            _this.adVideoElement = _this.setupAdVideoElement(initOptions);
            _this.videoEventFilter = new $g5Y9E$eyevinnvideoeventfilter.VideoEventFilter(_this.adVideoElement);
            _this.autoManagePlayback = initOptions.autoManagePlayback ? initOptions.autoManagePlayback : true;
            _this.fetchAds(initOptions);
            return _this;
          }
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.setupAdVideoElement = function(initOptions) {
            if (initOptions.adVideoElement) return initOptions.adVideoElement;
            if (initOptions.container) {
              var adVideoElement = $c2c23ffc2593fda7$export$ff9d762dbf7e2cc6(this.contentVideoElement);
              initOptions.container.appendChild(adVideoElement);
              return adVideoElement;
            }
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.fetchAds = function(initOptions) {
            var _a;
            return $020ad56d15653aeb$var$__awaiter(this, void 0, Promise, function() {
              var _b, _c;
              return $020ad56d15653aeb$var$__generator(this, function(_d) {
                switch (_d.label) {
                  case 0:
                    if (initOptions.isLive && ((_a = initOptions.adBreakVASTList) === null || _a === void 0 ? void 0 : _a.length) > 1) return [
                      2
                      /*return*/
                    ];
                    if (!initOptions.vmapUrl) return [
                      3,
                      2
                    ];
                    _b = this;
                    return [
                      4,
                      this.adServerService.getVMAP(initOptions.vmapUrl)
                    ];
                  case 1:
                    _b.adBreaks = _d.sent();
                    _d.label = 2;
                  case 2:
                    if (!initOptions.adBreakVASTList) return [
                      3,
                      4
                    ];
                    _c = this;
                    return [
                      4,
                      this.adServerService.getVASTs(initOptions.adBreakVASTList)
                    ];
                  case 3:
                    _c.adBreaks = _d.sent();
                    _d.label = 4;
                  case 4:
                    this.adBreaks = this.adBreaks.sort(function(a2, b) {
                      return a2.timeOffset - b.timeOffset;
                    });
                    this.adMarkers = this.adBreaks.map(function(adBreak) {
                      return adBreak.timeOffset;
                    });
                    this.start();
                    return [
                      2
                      /*return*/
                    ];
                }
              });
            });
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.play = function() {
            if (this.state !== "idle") return;
            this.state = "playing";
            this.playNextVideo();
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.fetchAdBreak = function(vastUrl) {
            return $020ad56d15653aeb$var$__awaiter(this, void 0, Promise, function() {
              var adBreak;
              return $020ad56d15653aeb$var$__generator(this, function(_a) {
                switch (_a.label) {
                  case 0:
                    return [
                      4,
                      this.adServerService.getVast(vastUrl)
                    ];
                  case 1:
                    adBreak = _a.sent();
                    if (adBreak) this.adBreaks.push(adBreak);
                    return [
                      2
                      /*return*/
                    ];
                }
              });
            });
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.triggerAdBreak = function() {
            return $020ad56d15653aeb$var$__awaiter(this, void 0, Promise, function() {
              return $020ad56d15653aeb$var$__generator(this, function(_a) {
                if (!this.adBreaks || this.adBreaks.length === 0) return [
                  2
                  /*return*/
                ];
                this.playAdBreak(this.adBreaks.shift());
                return [
                  2
                  /*return*/
                ];
              });
            });
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.start = function() {
            var _this = this;
            if (this.adMarkers[0] === 0) {
              this.adMarkers.shift();
              this.playAdBreak(this.adBreaks.shift());
            } else {
              var nextBreak = this.adMarkers.find(function(adMarker) {
                return adMarker > _this.contentVideoElement.currentTime;
              });
              if (!nextBreak) return;
              this.contentVideoElement.addEventListener("timeupdate", this.onContentTimeUpdateRef = this.onContentTimeUpdate.bind(this));
            }
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.playAdBreak = function(adbreak) {
            if (this.autoManagePlayback) this.contentVideoElement.pause();
            this.currentAdBreak = adbreak;
            this.trackAdBreakEvent(this.currentAdBreak, $6a91d1a6b96ec270$export$8ee40f6ae4909ee9.BREAK_START);
            for (var _i = 0, _a = adbreak.ads; _i < _a.length; _i++) {
              var ad = _a[_i];
              this.currentAdBreakVideos.push(ad);
            }
            this.playNextVideo();
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.playNextVideo = function() {
            this.videoEventFilter.clear();
            this.adVideoElement.removeEventListener("seeking", this.onAdSeekingRef);
            var ad = this.currentAdBreakVideos.shift();
            if (ad) this.playAd(ad);
            else this.playContent();
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.playAd = function(ad) {
            var _this = this;
            var src = ad.creative.mediafiles[0].fileUrl;
            if (this.debug) console.debug("[CSAIManager] play ad", ad);
            if (!src) return this.playNextVideo();
            this.currentAd = ad;
            this.adVideoElement.style.display = "block";
            this.adVideoElement.src = src;
            if (this.state !== "idle" || this.initOptions.autoplay) this.adVideoElement.play();
            this.adVideoElement.addEventListener("playing", function() {
              _this.trackEvent($6a91d1a6b96ec270$export$af003d03c08e493d.START, _this.currentAd);
              _this.trackEvent($6a91d1a6b96ec270$export$af003d03c08e493d.IMPRESSION, _this.currentAd);
              _this.state = "playing";
            }, {
              once: true
            });
            this.adVideoElement.addEventListener("ended", function() {
              _this.trackEvent($6a91d1a6b96ec270$export$af003d03c08e493d.COMPLETE, _this.currentAd);
              _this.state = "ended";
              _this.validCurrentTime = 0;
              _this.playNextVideo();
            }, {
              once: true
            });
            this.videoEventFilter.addEventListener($g5Y9E$eyevinnvideoeventfilter.PlayerEvents.TimeUpdate, function() {
              if (!_this.adVideoElement.seeking) _this.validCurrentTime = _this.adVideoElement.currentTime;
              _this.monitorProgress();
            });
            this.videoEventFilter.addEventListener($g5Y9E$eyevinnvideoeventfilter.PlayerEvents.Pause, function() {
              _this.trackEvent($6a91d1a6b96ec270$export$af003d03c08e493d.PAUSE, _this.currentAd);
            });
            this.videoEventFilter.addEventListener($g5Y9E$eyevinnvideoeventfilter.PlayerEvents.Resume, function() {
              _this.trackEvent($6a91d1a6b96ec270$export$af003d03c08e493d.RESUME, _this.currentAd);
            });
            this.videoEventFilter.addEventListener($g5Y9E$eyevinnvideoeventfilter.PlayerEvents.Error, function() {
              _this.trackEvent($6a91d1a6b96ec270$export$af003d03c08e493d.ERROR, _this.currentAd);
            });
            this.adVideoElement.addEventListener("seeking", this.onAdSeekingRef = function() {
              var delta = _this.adVideoElement.currentTime - _this.validCurrentTime;
              if (Math.abs(delta) > 0.01) _this.adVideoElement.currentTime = _this.validCurrentTime;
            });
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.playContent = function() {
            var _this = this;
            if (this.debug) console.debug("[CSAIManager] play content");
            this.adVideoElement.style.display = "none";
            this.adVideoElement.src = "";
            if (this.currentAdBreak) {
              this.trackAdBreakEvent(this.currentAdBreak, $6a91d1a6b96ec270$export$8ee40f6ae4909ee9.BREAK_END);
              this.currentAdBreak = null;
            }
            if (this.autoManagePlayback) this.contentVideoElement.play();
            var nextBreak = this.adMarkers.find(function(adMarker) {
              return adMarker > _this.contentVideoElement.currentTime;
            });
            if (!nextBreak) return;
            if (this.debug) console.debug("[CSAIManager] waiting for next break", nextBreak);
            this.contentVideoElement.addEventListener("timeupdate", this.onContentTimeUpdateRef = this.onContentTimeUpdate.bind(this));
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.onContentTimeUpdate = function() {
            var currentTime = this.contentVideoElement.currentTime;
            var nextBreak = this.adMarkers[0];
            if (currentTime > nextBreak) {
              this.contentVideoElement.removeEventListener("timeupdate", this.onContentTimeUpdateRef);
              this.adMarkers.shift();
              this.playAdBreak(this.adBreaks.shift());
            }
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.monitorProgress = function() {
            var _this = this;
            var currentTime = this.adVideoElement.currentTime;
            var duration = this.adVideoElement.duration;
            if (!this.currentAd) return;
            var remainingTime = duration - currentTime;
            var percentWatched = Math.round(100 - 100 * remainingTime / duration);
            var TrackingCuePoints = {
              25: $6a91d1a6b96ec270$export$af003d03c08e493d.FIRST_QUARTILE,
              50: $6a91d1a6b96ec270$export$af003d03c08e493d.MIDPOINT,
              75: $6a91d1a6b96ec270$export$af003d03c08e493d.THIRD_QUARTILE
            };
            Object.keys(TrackingCuePoints).map(function(value) {
              var event = TrackingCuePoints[value];
              if (percentWatched > parseInt(value, 10) && _this.currentAd) _this.trackEvent(event, _this.currentAd);
            });
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.trackAdBreakEvent = function(adBreak, trackingEvent) {
            var _this = this;
            if (!adBreak || !adBreak.trackingEvents || !trackingEvent || this.trackedAdBreaks[adBreak.timeOffset] && this.trackedAdBreaks[adBreak.timeOffset][trackingEvent] === true) return;
            if (!this.trackedAdBreaks[adBreak.timeOffset]) this.trackedAdBreaks[adBreak.timeOffset] = {};
            this.emit(trackingEvent, adBreak);
            var trackingUrls = adBreak.trackingEvents[trackingEvent] || [];
            trackingUrls.forEach(function(url) {
              return $020ad56d15653aeb$var$__awaiter(_this, void 0, void 0, function() {
                return $020ad56d15653aeb$var$__generator(this, function(_a) {
                  if (this.debug) console.debug("[CSAIManager] ad break tracking event -> ".concat(trackingEvent), url);
                  new Image().src = url;
                  return [
                    2
                    /*return*/
                  ];
                });
              });
            });
            this.trackedAdBreaks[adBreak.timeOffset][trackingEvent] = true;
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.trackEvent = function(trackingEvent, ad) {
            var _this = this;
            if (!ad || !trackingEvent || this.trackedAds[ad.id] && this.trackedAds[ad.id][trackingEvent] === true) return;
            if (!this.trackedAds[ad.id]) this.trackedAds[ad.id] = {};
            var trackingUrls = [];
            switch (trackingEvent) {
              case $6a91d1a6b96ec270$export$af003d03c08e493d.IMPRESSION:
                trackingUrls = ad.impressionUrlTemplates || [];
                break;
              case $6a91d1a6b96ec270$export$af003d03c08e493d.ERROR:
                trackingUrls = ad.errorUrlTemplates || [];
                break;
              default:
                trackingUrls = ad.creative.trackingEvents[trackingEvent] || [];
                break;
            }
            this.emit(trackingEvent, ad);
            trackingUrls === null || trackingUrls === void 0 || trackingUrls.forEach(function(url) {
              return $020ad56d15653aeb$var$__awaiter(_this, void 0, void 0, function() {
                return $020ad56d15653aeb$var$__generator(this, function(_a) {
                  if (this.debug) console.debug("[CSAIManager] ad tracking event -> ".concat(trackingEvent), url);
                  new Image().src = url;
                  return [
                    2
                    /*return*/
                  ];
                });
              });
            });
            this.trackedAds[ad.id][trackingEvent] = true;
          };
          $020ad56d15653aeb$export$b74fc88014c397b32.prototype.destroy = function() {
            this.adBreaks = [];
            this.adMarkers = [];
            this.currentAd = null;
            this.currentAdBreak = null;
            this.currentAdBreakVideos = [];
            this.onContentTimeUpdateRef = null;
            this.onAdSeekingRef = null;
            this.trackedAdBreaks = {};
            this.trackedAds = {};
            this.videoEventFilter.clear();
            this.videoEventFilter.destroy();
            if (!this.initOptions.adVideoElement) this.adVideoElement.remove();
          };
          return $020ad56d15653aeb$export$b74fc88014c397b32;
        }($cc312ea0fc7c8651$export$691d3e4b1045a188)
      );
      $parcel$exportWildcard(module.exports, $020ad56d15653aeb$exports);
    }
  });

  // node_modules/@eyevinn/whpp-client/dist/whpp-client.js
  var require_whpp_client = __commonJS({
    "node_modules/@eyevinn/whpp-client/dist/whpp-client.js"(exports) {
      exports.WHPPClient = /* @__PURE__ */ function() {
        function e4(e5, t3, n2) {
          this.localPeer = void 0, this.whppUrl = void 0, this.iceGatheringTimeout = void 0, this.waitingForCandidates = false, this.resourceUrl = void 0, this.opts = void 0, this.localPeer = e5, this.whppUrl = t3, this.opts = n2, this.localPeer.onicegatheringstatechange = this.onIceGatheringStateChange.bind(this), this.localPeer.oniceconnectionstatechange = this.onIceConnectionStateChange.bind(this), this.localPeer.onicecandidateerror = this.onIceCandidateError.bind(this), this.localPeer.onicecandidate = this.onIceCandidate.bind(this);
        }
        var t2 = e4.prototype;
        return t2.getPeer = function() {
          return this.localPeer;
        }, t2.connect = function() {
          try {
            var e5, t3 = this;
            return Promise.resolve(fetch(t3.whppUrl.href, { method: "POST", headers: { "Content-Type": null != (e5 = t3.opts) && e5.useLegacyContentType ? "application/json" : "application/whpp+json" }, body: "{}" })).then(function(e6) {
              var n2;
              function o2(o3) {
                return n2 ? o3 : Promise.resolve(e6.json()).then(function(n3) {
                  var o4 = e6.headers.get("location");
                  return t3.resourceUrl = new URL(o4), t3.log(n3.offer), Promise.resolve(function(e7) {
                    try {
                      return Promise.resolve(fetch(e7.href, { method: "OPTIONS" })).then(function(e8) {
                        return !(!e8.ok || !e8.headers.get("Allow") || !e8.headers.get("Allow").split(",").find(function(e9) {
                          return "PATCH" === e9.trimStart();
                        }));
                      });
                    } catch (e8) {
                      return Promise.reject(e8);
                    }
                  }(t3.resourceUrl)).then(function(e7) {
                    return t3.log("ICE trickle supported by endpoint: " + e7), t3.opts || (t3.opts = {}), t3.opts.noIceTrickle = !e7, t3.supportsTrickleIce() || (t3.waitingForCandidates = true), Promise.resolve(t3.localPeer.setRemoteDescription({ type: "offer", sdp: n3.offer })).then(function() {
                      return Promise.resolve(t3.localPeer.createAnswer()).then(function(e8) {
                        return Promise.resolve(t3.localPeer.setLocalDescription(e8)).then(function() {
                          var e9 = function() {
                            if (t3.supportsTrickleIce()) return t3.log("ICE trickle supported, sending answer"), Promise.resolve(t3.sendAnswer()).then(function() {
                            });
                            var e10;
                            t3.iceGatheringTimeout = setTimeout(t3.onIceGatheringTimeout.bind(t3), (null == (e10 = t3.opts) ? void 0 : e10.timeout) || 2e3);
                          }();
                          if (e9 && e9.then) return e9.then(function() {
                          });
                        });
                      });
                    });
                  });
                });
              }
              var r2 = function() {
                if (!e6.ok) return function() {
                  if (415 === e6.status) return t3.opts.useLegacyContentType = true, Promise.resolve(fetch(t3.whppUrl.href, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" })).then(function(t4) {
                    e6 = t4;
                  });
                  n2 = 1;
                }();
              }();
              return r2 && r2.then ? r2.then(o2) : o2(r2);
            });
          } catch (e6) {
            return Promise.reject(e6);
          }
        }, t2.log = function() {
          var e5, t3;
          null != (e5 = this.opts) && e5.debug && (t3 = console).log.apply(t3, ["whpp-client"].concat([].slice.call(arguments)));
        }, t2.error = function() {
          var e5;
          (e5 = console).error.apply(e5, ["whpp-client"].concat([].slice.call(arguments)));
        }, t2.onIceGatheringStateChange = function(e5) {
          this.log("IceGatheringState", this.localPeer.iceGatheringState), "complete" === this.localPeer.iceGatheringState && !this.supportsTrickleIce() && this.waitingForCandidates && this.onDoneWaitingForCandidates();
        }, t2.onIceConnectionStateChange = function(e5) {
          this.log("IceConnectionState", this.localPeer.iceConnectionState), "failed" === this.localPeer.iceConnectionState && this.localPeer.close();
        }, t2.onIceCandidate = function(e5) {
          try {
            var t3 = this;
            if ("icecandidate" !== e5.type) return Promise.resolve();
            var n2 = e5.candidate;
            return n2 ? (t3.log("IceCandidate", n2.candidate), t3.supportsTrickleIce() ? (t3.sendCandidate(n2), Promise.resolve()) : Promise.resolve()) : Promise.resolve();
          } catch (e6) {
            return Promise.reject(e6);
          }
        }, t2.onIceCandidateError = function(e5) {
          this.log("IceCandidateError", e5);
        }, t2.onIceGatheringTimeout = function() {
          this.log("IceGatheringTimeout"), !this.supportsTrickleIce() && this.waitingForCandidates && this.onDoneWaitingForCandidates();
        }, t2.supportsTrickleIce = function() {
          return this.opts && !this.opts.noIceTrickle;
        }, t2.onDoneWaitingForCandidates = function() {
          try {
            var e5 = this;
            return e5.waitingForCandidates = false, clearTimeout(e5.iceGatheringTimeout), Promise.resolve(e5.sendAnswer()).then(function() {
            });
          } catch (e6) {
            return Promise.reject(e6);
          }
        }, t2.sendCandidate = function(e5) {
          try {
            var t3, n2 = this;
            return Promise.resolve(fetch(n2.resourceUrl.href, { method: "PATCH", headers: { "Content-Type": null != (t3 = n2.opts) && t3.useLegacyContentType ? "application/json" : "application/whpp+json" }, body: JSON.stringify({ candidate: e5.candidate }) })).then(function(e6) {
              e6.ok || (n2.error("sendCandidate response: " + e6.status), 405 === e6.status && n2.log("ICE trickle not supported by endpoint"));
            });
          } catch (e6) {
            return Promise.reject(e6);
          }
        }, t2.sendAnswer = function() {
          try {
            var e5, t3 = this, n2 = { answer: t3.localPeer.localDescription.sdp };
            return t3.log(n2.answer), Promise.resolve(fetch(t3.resourceUrl.href, { method: "PUT", headers: { "Content-Type": null != (e5 = t3.opts) && e5.useLegacyContentType ? "application/json" : "application/whpp+json" }, body: JSON.stringify(n2) })).then(function(e6) {
              e6.ok || t3.error("sendAnswer response: " + e6.status);
            });
          } catch (e6) {
            return Promise.reject(e6);
          }
        }, e4;
      }();
    }
  });

  // node_modules/@eyevinn/webrtc-player/dist/main.js
  var require_main = __commonJS({
    "node_modules/@eyevinn/webrtc-player/dist/main.js"(exports, module) {
      var $a1w4g$events = require_events();
      var $a1w4g$eyevinncsaimanager = require_dist2();
      var $a1w4g$eyevinnwhppclient = require_whpp_client();
      function $parcel$export(e4, n2, v, s2) {
        Object.defineProperty(e4, n2, { get: v, set: s2, enumerable: true, configurable: true });
      }
      $parcel$export(module.exports, "WebRTCPlayer", () => $8c8737df5845fd96$export$f6039712bf1ca949);
      $parcel$export(module.exports, "ListAvailableAdapters", () => $4366558ee7129abf$export$62ed887aeb7fab64);
      var $d580fda374b2d4e1$export$1bee3ffe1758e87d = class {
        constructor(peer, channelUrl, onError) {
          __publicField(this, "client");
          __publicField(this, "localPeer");
          __publicField(this, "debug", false);
          this.channelUrl = channelUrl;
          this.resetPeer(peer);
        }
        enableDebug() {
          this.debug = true;
        }
        resetPeer(newPeer) {
          this.localPeer = newPeer;
        }
        getPeer() {
          return this.localPeer;
        }
        async connect(opts) {
          if (this.localPeer) {
            this.client = new (0, $a1w4g$eyevinnwhppclient.WHPPClient)(this.localPeer, this.channelUrl, {
              debug: this.debug
            });
            await this.client.connect();
          }
        }
        async disconnect() {
          return;
        }
        log(...args) {
          if (this.debug) console.log("WebRTC-player", ...args);
        }
        error(...args) {
          console.error("WebRTC-player", ...args);
        }
      };
      var $9c9759905f118312$var$DEFAULT_CONNECT_TIMEOUT = 2e3;
      var $9c9759905f118312$export$5463baa67f138efa = class {
        constructor(peer, channelUrl, onError) {
          __publicField(this, "waitingForCandidates", false);
          __publicField(this, "resourceUrl");
          this.channelUrl = channelUrl;
          this.debug = true;
          this.resetPeer(peer);
        }
        enableDebug() {
          this.debug = true;
        }
        resetPeer(newPeer) {
          this.localPeer = newPeer;
          this.localPeer.onicegatheringstatechange = this.onIceGatheringStateChange.bind(this);
          this.localPeer.oniceconnectionstatechange = this.onIceConnectionStateChange.bind(this);
          this.localPeer.onicecandidateerror = this.onIceCandidateError.bind(this);
          this.localPeer.onicecandidate = this.onIceCandidate.bind(this);
        }
        getPeer() {
          return this.localPeer;
        }
        async connect(opts) {
          if (!this.localPeer) {
            this.log("Local RTC peer not initialized");
            return;
          }
          this.localPeer.addTransceiver("video", {
            direction: "recvonly"
          });
          this.localPeer.addTransceiver("audio", {
            direction: "recvonly"
          });
          const offer = await this.localPeer.createOffer({
            offerToReceiveAudio: true,
            offerToReceiveVideo: true
          });
          this.localPeer.setLocalDescription(offer);
          this.waitingForCandidates = true;
          this.iceGatheringTimeout = setTimeout(this.onIceGatheringTimeout.bind(this), opts && opts.timeout || $9c9759905f118312$var$DEFAULT_CONNECT_TIMEOUT);
        }
        async disconnect() {
          return;
        }
        log(...args) {
          if (this.debug) console.log("WebRTC-player", ...args);
        }
        error(...args) {
          console.error("WebRTC-player", ...args);
        }
        onIceGatheringStateChange(event) {
          if (!this.localPeer) {
            this.log("Local RTC peer not initialized");
            return;
          }
          this.log("IceGatheringState", this.localPeer.iceGatheringState);
          if (this.localPeer.iceGatheringState !== "complete" || !this.waitingForCandidates) return;
          this.onDoneWaitingForCandidates();
        }
        onIceConnectionStateChange() {
          if (!this.localPeer) {
            this.log("Local RTC peer not initialized");
            return;
          }
          this.log("IceConnectionState", this.localPeer.iceConnectionState);
          if (this.localPeer.iceConnectionState === "failed") this.localPeer.close();
        }
        async onIceCandidate(event) {
          if (event.type !== "icecandidate") return;
          const candidateEvent = event;
          const candidate = candidateEvent.candidate;
          if (!candidate) return;
          this.log("IceCandidate", candidate.candidate);
        }
        onIceCandidateError(e4) {
          this.log("IceCandidateError", e4);
        }
        onIceGatheringTimeout() {
          this.log("IceGatheringTimeout");
          if (!this.waitingForCandidates) return;
          this.onDoneWaitingForCandidates();
        }
        async onDoneWaitingForCandidates() {
          if (!this.localPeer) {
            this.log("Local RTC peer not initialized");
            return;
          }
          this.waitingForCandidates = false;
          clearTimeout(this.iceGatheringTimeout);
          const response = await fetch(this.channelUrl.toString(), {
            method: "POST",
            headers: {
              "Content-Type": "application/json"
            },
            body: JSON.stringify({
              sdp: this.localPeer.localDescription?.sdp
            })
          });
          if (response.ok) {
            const { sdp } = await response.json();
            this.localPeer.setRemoteDescription({
              type: "answer",
              sdp
            });
          }
        }
      };
      var $4c7e7e20a6e4dde3$var$DEFAULT_CONNECT_TIMEOUT = 2e3;
      var $4c7e7e20a6e4dde3$export$2351e2e8d1fcfd84;
      (function(WHEPType) {
        WHEPType[WHEPType["Client"] = 0] = "Client";
        WHEPType[WHEPType["Server"] = 1] = "Server";
      })($4c7e7e20a6e4dde3$export$2351e2e8d1fcfd84 || ($4c7e7e20a6e4dde3$export$2351e2e8d1fcfd84 = {}));
      var $4c7e7e20a6e4dde3$export$e35e1b35ea68c1 = class {
        constructor(peer, channelUrl, onError, mediaConstraints, authKey) {
          __publicField(this, "debug", false);
          __publicField(this, "waitingForCandidates", false);
          __publicField(this, "resource", null);
          this.mediaConstraints = mediaConstraints;
          this.channelUrl = channelUrl;
          if (typeof this.channelUrl === "string") throw new Error(`channelUrl parameter expected to be an URL not a string`);
          this.whepType = $4c7e7e20a6e4dde3$export$2351e2e8d1fcfd84.Client;
          this.authKey = authKey;
          this.onErrorHandler = onError;
          this.audio = !this.mediaConstraints.videoOnly;
          this.video = !this.mediaConstraints.audioOnly;
          this.resetPeer(peer);
        }
        enableDebug() {
          this.debug = true;
        }
        resetPeer(newPeer) {
          this.localPeer = newPeer;
          this.localPeer.onicegatheringstatechange = this.onIceGatheringStateChange.bind(this);
          this.localPeer.onicecandidate = this.onIceCandidate.bind(this);
        }
        getPeer() {
          return this.localPeer;
        }
        async connect(opts) {
          try {
            await this.initSdpExchange();
          } catch (error) {
            console.error(error.toString());
            this.onErrorHandler("connecterror");
          }
        }
        async disconnect() {
          if (this.resource) {
            this.log(`Disconnecting by removing resource ${this.resource}`);
            const headers = {};
            this.authKey && (headers["Authorization"] = this.authKey);
            const response = await fetch(this.resource, {
              method: "DELETE",
              headers
            });
            if (response.ok) this.log(`Successfully removed resource`);
          }
        }
        async initSdpExchange() {
          clearTimeout(this.iceGatheringTimeout);
          if (this.localPeer && this.whepType === $4c7e7e20a6e4dde3$export$2351e2e8d1fcfd84.Client) {
            if (this.video) this.localPeer.addTransceiver("video", {
              direction: "recvonly"
            });
            if (this.audio) this.localPeer.addTransceiver("audio", {
              direction: "recvonly"
            });
            const offer = await this.localPeer.createOffer();
            if (offer.sdp) {
              const opusCodecId = offer.sdp.match(/a=rtpmap:(\d+) opus\/48000\/2/);
              if (opusCodecId !== null) offer.sdp = offer.sdp.replace("opus/48000/2\r\n", "opus/48000/2\r\na=rtcp-fb:" + opusCodecId[1] + " nack\r\n");
            }
            await this.localPeer.setLocalDescription(offer);
            this.waitingForCandidates = true;
            this.iceGatheringTimeout = setTimeout(this.onIceGatheringTimeout.bind(this), $4c7e7e20a6e4dde3$var$DEFAULT_CONNECT_TIMEOUT);
          } else if (this.localPeer) {
            const offer = await this.requestOffer();
            await this.localPeer.setRemoteDescription({
              type: "offer",
              sdp: offer
            });
            const answer = await this.localPeer.createAnswer();
            try {
              await this.localPeer.setLocalDescription(answer);
              this.waitingForCandidates = true;
              this.iceGatheringTimeout = setTimeout(this.onIceGatheringTimeout.bind(this), $4c7e7e20a6e4dde3$var$DEFAULT_CONNECT_TIMEOUT);
            } catch (error) {
              this.log(answer.sdp);
              throw error;
            }
          }
        }
        async onIceCandidate(event) {
          if (event.type !== "icecandidate") return;
          const candidateEvent = event;
          const candidate = candidateEvent.candidate;
          if (!candidate) return;
          this.log(candidate.candidate);
        }
        onIceGatheringStateChange(event) {
          if (this.localPeer) {
            this.log("IceGatheringState", this.localPeer.iceGatheringState);
            if (this.localPeer.iceGatheringState !== "complete" || !this.waitingForCandidates) return;
            this.onDoneWaitingForCandidates();
          }
        }
        onIceGatheringTimeout() {
          this.log("IceGatheringTimeout");
          if (!this.waitingForCandidates) return;
          this.onDoneWaitingForCandidates();
        }
        async onDoneWaitingForCandidates() {
          this.waitingForCandidates = false;
          clearTimeout(this.iceGatheringTimeout);
          if (this.whepType === $4c7e7e20a6e4dde3$export$2351e2e8d1fcfd84.Client) await this.sendOffer();
          else await this.sendAnswer();
        }
        getResouceUrlFromHeaders(headers) {
          if (headers.get("Location") && headers.get("Location")?.match(/^\//)) {
            const resourceUrl = new URL(headers.get("Location"), this.channelUrl.origin);
            return resourceUrl.toString();
          } else return headers.get("Location");
        }
        async requestOffer() {
          if (this.whepType === $4c7e7e20a6e4dde3$export$2351e2e8d1fcfd84.Server) {
            this.log(`Requesting offer from: ${this.channelUrl}`);
            const headers = {
              "Content-Type": "application/sdp"
            };
            this.authKey && (headers["Authorization"] = this.authKey);
            const response = await fetch(this.channelUrl.toString(), {
              method: "POST",
              headers,
              body: ""
            });
            if (response.ok) {
              this.resource = this.getResouceUrlFromHeaders(response.headers);
              this.log("WHEP Resource", this.resource);
              const offer = await response.text();
              this.log("Received offer", offer);
              return offer;
            } else {
              const serverMessage = await response.text();
              throw new Error(serverMessage);
            }
          }
        }
        async sendAnswer() {
          if (!this.localPeer) {
            this.log("Local RTC peer not initialized");
            return;
          }
          if (this.whepType === $4c7e7e20a6e4dde3$export$2351e2e8d1fcfd84.Server && this.resource) {
            const answer = this.localPeer.localDescription;
            if (answer) {
              const headers = {
                "Content-Type": "application/sdp"
              };
              this.authKey && (headers["Authorization"] = this.authKey);
              const response = await fetch(this.resource, {
                method: "PATCH",
                headers,
                body: answer.sdp
              });
              if (!response.ok) this.error(`sendAnswer response: ${response.status}`);
            }
          }
        }
        async sendOffer() {
          if (!this.localPeer) {
            this.log("Local RTC peer not initialized");
            return;
          }
          const offer = this.localPeer.localDescription;
          if (this.whepType === $4c7e7e20a6e4dde3$export$2351e2e8d1fcfd84.Client && offer) {
            this.log(`Sending offer to ${this.channelUrl}`);
            const headers = {
              "Content-Type": "application/sdp"
            };
            this.authKey && (headers["Authorization"] = this.authKey);
            const response = await fetch(this.channelUrl.toString(), {
              method: "POST",
              headers,
              body: offer.sdp
            });
            if (response.ok) {
              this.resource = this.getResouceUrlFromHeaders(response.headers);
              this.log("WHEP Resource", this.resource);
              const answer = await response.text();
              await this.localPeer.setRemoteDescription({
                type: "answer",
                sdp: answer
              });
            } else if (response.status === 400) {
              this.log(`server does not support client-offer, need to reconnect`);
              this.whepType = $4c7e7e20a6e4dde3$export$2351e2e8d1fcfd84.Server;
              this.onErrorHandler("reconnectneeded");
            } else if (response.status === 406 && this.audio && !this.mediaConstraints.audioOnly && !this.mediaConstraints.videoOnly) {
              this.log(`maybe server does not support audio. Let's retry without audio`);
              this.audio = false;
              this.video = true;
              this.onErrorHandler("reconnectneeded");
            } else if (response.status === 406 && this.video && !this.mediaConstraints.audioOnly && !this.mediaConstraints.videoOnly) {
              this.log(`maybe server does not support video. Let's retry without video`);
              this.audio = true;
              this.video = false;
              this.onErrorHandler("reconnectneeded");
            } else {
              this.error(`sendAnswer response: ${response.status}`);
              this.onErrorHandler("connectionfailed");
            }
          }
        }
        log(...args) {
          if (this.debug) console.log("WebRTC-player", ...args);
        }
        error(...args) {
          console.error("WebRTC-player", ...args);
        }
      };
      var $4366558ee7129abf$var$WHPPAdapterFactory = (peer, channelUrl, onError, mediaConstraints, authKey) => {
        return new (0, $d580fda374b2d4e1$export$1bee3ffe1758e87d)(peer, channelUrl, onError);
      };
      var $4366558ee7129abf$var$EyevinnAdapterFactory = (peer, channelUrl, onError, mediaConstraints, authKey) => {
        return new (0, $9c9759905f118312$export$5463baa67f138efa)(peer, channelUrl, onError);
      };
      var $4366558ee7129abf$var$WHEPAdapterFactory = (peer, channelUrl, onError, mediaConstraints, authKey) => {
        return new (0, $4c7e7e20a6e4dde3$export$e35e1b35ea68c1)(peer, channelUrl, onError, mediaConstraints, authKey);
      };
      var $4366558ee7129abf$var$adapters = {
        "se.eyevinn.whpp": $4366558ee7129abf$var$WHPPAdapterFactory,
        "se.eyevinn.webrtc": $4366558ee7129abf$var$EyevinnAdapterFactory,
        whep: $4366558ee7129abf$var$WHEPAdapterFactory
      };
      function $4366558ee7129abf$export$4f24674036ad9ae3(type, peer, channelUrl, onError, mediaConstraints, authKey) {
        return $4366558ee7129abf$var$adapters[type](peer, channelUrl, onError, mediaConstraints, authKey);
      }
      function $4366558ee7129abf$export$62ed887aeb7fab64() {
        return Object.keys($4366558ee7129abf$var$adapters);
      }
      var $8c8737df5845fd96$var$Message;
      (function(Message) {
        Message["NO_MEDIA"] = "no-media";
        Message["MEDIA_RECOVERED"] = "media-recovered";
        Message["PEER_CONNECTION_FAILED"] = "peer-connection-failed";
        Message["INITIAL_CONNECTION_FAILED"] = "initial-connection-failed";
        Message["CONNECT_ERROR"] = "connect-error";
      })($8c8737df5845fd96$var$Message || ($8c8737df5845fd96$var$Message = {}));
      var $8c8737df5845fd96$var$MediaConstraintsDefaults = {
        audioOnly: false,
        videoOnly: false
      };
      var $8c8737df5845fd96$var$RECONNECT_ATTEMPTS = 2;
      var $8c8737df5845fd96$export$f6039712bf1ca949 = class extends (0, $a1w4g$events.EventEmitter) {
        constructor(opts) {
          super();
          __publicField(this, "peer", {});
          __publicField(this, "adapterFactory");
          __publicField(this, "channelUrl", {});
          __publicField(this, "authKey");
          __publicField(this, "reconnectAttemptsLeft", $8c8737df5845fd96$var$RECONNECT_ATTEMPTS);
          __publicField(this, "adapter", {});
          __publicField(this, "statsTypeFilter");
          __publicField(this, "msStatsInterval", 5e3);
          __publicField(this, "mediaTimeoutOccured", false);
          __publicField(this, "mediaTimeoutThreshold", 3e4);
          __publicField(this, "timeoutThresholdCounter", 0);
          __publicField(this, "bytesReceived", 0);
          this.mediaConstraints = {
            ...$8c8737df5845fd96$var$MediaConstraintsDefaults,
            ...opts.mediaConstraints
          };
          this.videoElement = opts.video;
          this.adapterType = opts.type;
          this.adapterFactory = opts.adapterFactory;
          this.statsTypeFilter = opts.statsTypeFilter;
          this.mediaTimeoutThreshold = opts.timeoutThreshold ?? this.mediaTimeoutThreshold;
          this.iceServers = [
            {
              urls: "stun:stun.l.google.com:19302"
            }
          ];
          if (opts.iceServers) this.iceServers = opts.iceServers;
          this.debug = !!opts.debug;
          if (opts.vmapUrl) {
            this.csaiManager = new (0, $a1w4g$eyevinncsaimanager.CSAIManager)({
              contentVideoElement: this.videoElement,
              vmapUrl: opts.vmapUrl,
              isLive: true,
              autoplay: true
            });
            this.videoElement.addEventListener("ended", () => {
              if (this.csaiManager) this.csaiManager.destroy();
            });
          }
        }
        async load(channelUrl, authKey) {
          this.channelUrl = channelUrl;
          this.authKey = authKey;
          this.connect();
        }
        // eslint-disable-next-line  @typescript-eslint/no-explicit-any
        log(...args) {
          if (this.debug) console.log("WebRTC-player", ...args);
        }
        // eslint-disable-next-line  @typescript-eslint/no-explicit-any
        error(...args) {
          console.error("WebRTC-player", ...args);
        }
        async onConnectionStateChange() {
          if (this.peer.connectionState === "failed") {
            this.emit($8c8737df5845fd96$var$Message.PEER_CONNECTION_FAILED);
            this.peer && this.peer.close();
            if (this.reconnectAttemptsLeft <= 0) {
              this.error("Connection failed, reconnecting failed");
              return;
            }
            this.log(`Connection failed, recreating peer connection, attempts left ${this.reconnectAttemptsLeft}`);
            await this.connect();
            this.reconnectAttemptsLeft--;
          } else if (this.peer.connectionState === "connected") {
            this.log("Connected");
            this.reconnectAttemptsLeft = $8c8737df5845fd96$var$RECONNECT_ATTEMPTS;
          }
        }
        onErrorHandler(error) {
          this.log(`onError=${error}`);
          switch (error) {
            case "reconnectneeded":
              this.peer && this.peer.close();
              this.videoElement.srcObject = null;
              this.setupPeer();
              this.adapter.resetPeer(this.peer);
              this.adapter.connect();
              break;
            case "connectionfailed":
              this.peer && this.peer.close();
              this.videoElement.srcObject = null;
              this.emit($8c8737df5845fd96$var$Message.INITIAL_CONNECTION_FAILED);
              break;
            case "connecterror":
              this.peer && this.peer.close();
              this.adapter.resetPeer(this.peer);
              this.emit($8c8737df5845fd96$var$Message.CONNECT_ERROR);
              break;
          }
        }
        async onConnectionStats() {
          if (this.peer && this.statsTypeFilter) {
            let bytesReceivedBlock = 0;
            const stats = await this.peer.getStats(null);
            stats.forEach((report) => {
              if (report.type.match(this.statsTypeFilter)) this.emit(`stats:${report.type}`, report);
              if (report.type.match("inbound-rtp")) bytesReceivedBlock += report.bytesReceived;
            });
            if (bytesReceivedBlock <= this.bytesReceived) {
              this.timeoutThresholdCounter += this.msStatsInterval;
              if (this.mediaTimeoutOccured === false && this.timeoutThresholdCounter >= this.mediaTimeoutThreshold) {
                this.emit($8c8737df5845fd96$var$Message.NO_MEDIA);
                this.mediaTimeoutOccured = true;
              }
            } else {
              this.bytesReceived = bytesReceivedBlock;
              this.timeoutThresholdCounter = 0;
              if (this.mediaTimeoutOccured == true) {
                this.emit($8c8737df5845fd96$var$Message.MEDIA_RECOVERED);
                this.mediaTimeoutOccured = false;
              }
            }
          }
        }
        setupPeer() {
          this.peer = new RTCPeerConnection({
            iceServers: this.iceServers
          });
          this.peer.onconnectionstatechange = this.onConnectionStateChange.bind(this);
          this.peer.ontrack = this.onTrack.bind(this);
        }
        onTrack(event) {
          for (const stream of event.streams) {
            if (stream.id === "feedbackvideomslabel") continue;
            console.log("Set video element remote stream to " + stream.id, " audio " + stream.getAudioTracks().length + " video " + stream.getVideoTracks().length);
            if (!this.videoElement.srcObject) this.videoElement.srcObject = new MediaStream();
            for (const track of stream.getTracks()) this.videoElement.srcObject.addTrack(track);
          }
        }
        async connect() {
          this.setupPeer();
          if (this.adapterType !== "custom") this.adapter = (0, $4366558ee7129abf$export$4f24674036ad9ae3)(this.adapterType, this.peer, this.channelUrl, this.onErrorHandler.bind(this), this.mediaConstraints, this.authKey);
          else if (this.adapterFactory) this.adapter = this.adapterFactory(this.peer, this.channelUrl, this.onErrorHandler.bind(this), this.mediaConstraints, this.authKey);
          if (!this.adapter) throw new Error(`Failed to create adapter (${this.adapterType})`);
          if (this.debug) this.adapter.enableDebug();
          this.statsInterval = setInterval(this.onConnectionStats.bind(this), this.msStatsInterval);
          try {
            await this.adapter.connect();
          } catch (error) {
            console.error(error);
            this.stop();
          }
        }
        mute() {
          this.videoElement.muted = true;
        }
        unmute() {
          this.videoElement.muted = false;
        }
        async unload() {
          await this.adapter.disconnect();
          this.stop();
        }
        stop() {
          clearInterval(this.statsInterval);
          this.peer.close();
          this.videoElement.srcObject = null;
          this.videoElement.load();
        }
        destroy() {
          this.stop();
          this.removeAllListeners();
        }
      };
    }
  });

  // webrtc-player.js
  var webrtc_player_exports = {};
  __export(webrtc_player_exports, {
    ListAvailableAdapters: () => import_webrtc_player.ListAvailableAdapters,
    WebRTCPlayer: () => import_webrtc_player.WebRTCPlayer
  });
  var import_webrtc_player = __toESM(require_main());
  return __toCommonJS(webrtc_player_exports);
})();
